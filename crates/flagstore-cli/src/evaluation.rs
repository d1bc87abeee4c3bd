//! Evaluations as the JSON the LaunchDarkly SDKs and tools print. The CLI's output format; the
//! cross-SDK tests in `integration-tests` compile this same file to compare answers.

use flagstore_launchdarkly::launchdarkly_server_sdk::{Client, Context, FlagValue};
use serde_json::{Value, json};

/// Evaluates `flag` for `context` and returns `{"value": …, "variationIndex": …, "reason": {…}}`
/// with the SDK's reason names (`RULE_MATCH`, `FALLTHROUGH`, `ERROR` with `errorKind`, …), the
/// shape the LaunchDarkly SDKs of every language give. On an error the value is `null` rather
/// than a made-up default, so answers from different SDKs compare equal.
pub(crate) fn evaluation_json(client: &Client, flag: &str, context: &Context) -> Value {
    let detail = client.variation_detail(context, flag, FlagValue::Json(Value::Null));
    let reason = serde_json::to_value(&detail.reason).unwrap_or(Value::Null);
    let value = if reason["kind"] == "ERROR" {
        Value::Null
    } else {
        detail
            .value
            .and_then(|v| v.as_json())
            .unwrap_or(Value::Null)
    };
    json!({ "value": value, "variationIndex": detail.variation_index, "reason": reason })
}
