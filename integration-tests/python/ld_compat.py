"""Drives the LaunchDarkly Python server SDK's own Redis, DynamoDB and Consul stores for the
cross-SDK tests in ../tests/cross_sdk.rs.

    ld_compat.py write BACKEND_JSON FIXTURE   init the store from FIXTURE, then apply the mutations
    ld_compat.py upsert BACKEND_JSON KIND ITEM_JSON
                                              upsert one item through the SDK's store
    ld_compat.py bigseg-read  BACKEND_JSON KEYS_JSON
                                              print the SDK's Big Segments store's view: metadata and
                                              the membership of each context key
    ld_compat.py bigseg-write BACKEND_JSON DATA_JSON
                                              write Big Segments data in the layout the SDK test
                                              suites use, with raw redis/boto3 calls
    ld_compat.py bigseg-eval  BACKEND_JSON FLAG KEYS_JSON [STALE_AFTER_SECONDS]
                                              evaluate FLAG for each user key with Big Segments on
    ld_compat.py time-init BACKEND_JSON N ITERATIONS
                                              init N benchmark flags ITERATIONS times through the
                                              SDK's store; print the seconds spent inside init
    ld_compat.py eval  BACKEND_JSON CONTEXTS FIXTURE
                                              print daemon-mode evaluations of FIXTURE's flags as JSON
    ld_compat.py stream BACKEND_JSON URI SDK_KEY DONE_FLAG
                                              stream from a (fake) LaunchDarkly at URI into the store,
                                              as a normal SDK client does, until the flag DONE_FLAG
                                              is stored (the test patches it last)

BACKEND_JSON names the store, e.g. {"backend": "redis", "url": "redis://127.0.0.1:6379", "prefix": "p"}.
The mutations are the ones the Rust side applies: see MUTATIONS below.
"""

import copy
import json
import sys
import time

from ldclient.client import LDClient
from ldclient.config import BigSegmentsConfig, Config
from ldclient.context import Context
from ldclient.feature_store import CacheConfig
from ldclient.impl.big_segments_common import _hash_for_user_key
from ldclient.integrations import Consul, DynamoDB, Redis
from ldclient.versioned_data_kind import FEATURES, SEGMENTS

# After init: "legacy-search" moves to its second variation (an upsert); "maintenance-mode" is
# deleted (a tombstone at version 10).
UPSERT_FLAG = "legacy-search"
DELETE_FLAG = "maintenance-mode"
DELETE_VERSION = 10


def store_for(spec):
    caching = CacheConfig.disabled()
    backend = spec["backend"]
    if backend == "redis":
        return Redis.new_feature_store(url=spec["url"], prefix=spec["prefix"], caching=caching)
    if backend == "dynamodb":
        return DynamoDB.new_feature_store(
            spec["table"], prefix=spec.get("prefix") or None, dynamodb_opts=dynamodb_opts(spec), caching=caching
        )
    if backend == "consul":
        return Consul.new_feature_store(
            host=spec["host"], port=spec["port"], prefix=spec["prefix"], caching=caching
        )
    raise SystemExit(f"unknown backend {backend!r}")


def write(spec, fixture_path):
    with open(fixture_path, encoding="utf-8") as f:
        data = json.load(f)
    store = store_for(spec)
    store.init({FEATURES: data["flags"], SEGMENTS: data["segments"]})
    updated = copy.deepcopy(data["flags"][UPSERT_FLAG])
    updated["version"] += 1
    updated["fallthrough"] = {"variation": 1}
    store.upsert(FEATURES, updated)
    store.delete(FEATURES, DELETE_FLAG, DELETE_VERSION)


def big_segment_store_for(spec):
    backend = spec["backend"]
    if backend == "redis":
        return Redis.new_big_segment_store(url=spec["url"], prefix=spec["prefix"])
    if backend == "dynamodb":
        return DynamoDB.new_big_segment_store(
            spec["table"], prefix=spec.get("prefix") or None, dynamodb_opts=dynamodb_opts(spec)
        )
    raise SystemExit(f"no Big Segments store for {backend!r}")


def dynamodb_opts(spec):
    return {
        "endpoint_url": spec["endpoint"],
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }


def bigseg_read(spec, keys_json):
    store = big_segment_store_for(spec)
    memberships = {key: store.get_membership(_hash_for_user_key(key)) for key in json.loads(keys_json)}
    out = {"synchronizedOn": store.get_metadata().last_up_to_date, "memberships": memberships}
    json.dump(out, sys.stdout, sort_keys=True)


def bigseg_write(spec, data_json):
    data = json.loads(data_json)
    prefix = spec.get("prefix")
    if spec["backend"] == "redis":
        import redis

        r = redis.Redis.from_url(spec["url"])
        prefix = prefix or "launchdarkly"
        r.set(prefix + ":big_segments_synchronized_on", str(data["synchronizedOn"]))
        for key, sets in data["contexts"].items():
            h = _hash_for_user_key(key)
            for ref in sets.get("included", []):
                r.sadd(prefix + ":big_segment_include:" + h, ref)
            for ref in sets.get("excluded", []):
                r.sadd(prefix + ":big_segment_exclude:" + h, ref)
    elif spec["backend"] == "dynamodb":
        import boto3

        client = boto3.client("dynamodb", **dynamodb_opts(spec))
        pre = (prefix + ":") if prefix else ""
        meta = pre + "big_segments_metadata"
        client.put_item(
            TableName=spec["table"],
            Item={"namespace": {"S": meta}, "key": {"S": meta}, "synchronizedOn": {"N": str(data["synchronizedOn"])}},
        )
        for key, sets in data["contexts"].items():
            item = {"namespace": {"S": pre + "big_segments_user"}, "key": {"S": _hash_for_user_key(key)}}
            for attr in ("included", "excluded"):
                if sets.get(attr):
                    item[attr] = {"SS": sets[attr]}
            client.put_item(TableName=spec["table"], Item=item)
    else:
        raise SystemExit(f"no Big Segments layout for {spec['backend']!r}")


def bigseg_eval(spec, flag, keys_json, stale_after=None):
    options = {"store": big_segment_store_for(spec)}
    if stale_after is not None:
        options["stale_after"] = float(stale_after)
    config = Config(
        "sdk-key-big-segments",
        use_ldd=True,
        feature_store=store_for(spec),
        send_events=False,
        big_segments=BigSegmentsConfig(**options),
    )
    client = LDClient(config=config)
    results = []
    for key in json.loads(keys_json):
        detail = client.variation_detail(flag, Context.create(key), None)
        results.append({"context": key, "value": detail.value, "reason": detail.reason})
    client.close()
    json.dump(results, sys.stdout, sort_keys=True)


def bench_flag(i):
    key = "flag-%05d" % i
    return {
        "key": key, "version": 3, "on": True, "salt": key + "-salt",
        "targets": [{"variation": 0, "values": ["user-1", "user-2", "user-3", "user-4", "user-5"]}],
        "rules": [
            {"id": "r1", "variation": 0, "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@example.com"], "negate": False}]},
            {"id": "r2", "rollout": {"variations": [{"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}]},
             "clauses": [{"attribute": "country", "op": "in", "values": ["de", "fr", "nl", "se", "no"], "negate": False}]},
        ],
        "fallthrough": {"variation": 0}, "offVariation": 1, "prerequisites": [], "variations": [True, False],
        "description": "A flag of realistic size for benchmarks, with some text so that it weighs about what production flags weigh.",
    }


def time_init(spec, n, iterations):
    import time

    store = store_for(spec)
    flags = {f["key"]: f for f in (bench_flag(i) for i in range(int(n)))}
    spent = 0.0
    for _ in range(int(iterations)):
        started = time.perf_counter()
        store.init({FEATURES: flags, SEGMENTS: {}})
        spent += time.perf_counter() - started
    print(spent)


def upsert(spec, kind, item_json):
    kinds = {"features": FEATURES, "segments": SEGMENTS}
    store_for(spec).upsert(kinds[kind], json.loads(item_json))


def evaluate(spec, contexts_path, fixture_path):
    with open(contexts_path, encoding="utf-8") as f:
        contexts = json.load(f)
    with open(fixture_path, encoding="utf-8") as f:
        flags = sorted(json.load(f)["flags"])
    store = store_for(spec)
    config = Config("sdk-key-cross-sdk", use_ldd=True, feature_store=store, send_events=False)
    client = LDClient(config=config)
    results = []
    for raw in contexts:
        context = Context.from_dict(raw)
        for key in flags:
            detail = client.variation_detail(key, context, None)
            results.append(
                {
                    "flag": key,
                    "context": raw["key"],
                    "value": detail.value,
                    "variationIndex": detail.variation_index,
                    "reason": detail.reason,
                }
            )
    client.close()
    json.dump(results, sys.stdout, ensure_ascii=False, sort_keys=True)


def stream(spec, uri, sdk_key, done_flag):
    store = store_for(spec)
    config = Config(
        sdk_key,
        stream_uri=uri,
        base_uri=uri,
        events_uri=uri,
        feature_store=store,
        send_events=False,
        diagnostic_opt_out=True,
    )
    client = LDClient(config=config, start_wait=20)
    if not client.is_initialized():
        raise SystemExit(f"the Python SDK did not initialize from {uri}")
    deadline = time.time() + 30
    while store.get(FEATURES, done_flag, lambda item: item) is None:
        if time.time() > deadline:
            raise SystemExit(f"{done_flag!r} was not stored within 30 s")
        time.sleep(0.02)
    client.close()


def main():
    command, spec = sys.argv[1], json.loads(sys.argv[2])
    if command == "write":
        write(spec, sys.argv[3])
    elif command == "bigseg-read":
        bigseg_read(spec, sys.argv[3])
    elif command == "bigseg-write":
        bigseg_write(spec, sys.argv[3])
    elif command == "bigseg-eval":
        bigseg_eval(spec, sys.argv[3], sys.argv[4], *sys.argv[5:6])
    elif command == "time-init":
        time_init(spec, sys.argv[3], sys.argv[4])
    elif command == "upsert":
        upsert(spec, sys.argv[3], sys.argv[4])
    elif command == "eval":
        evaluate(spec, sys.argv[3], sys.argv[4])
    elif command == "stream":
        stream(spec, sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
