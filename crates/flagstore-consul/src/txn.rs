//! Consul's `/v1/txn` endpoint: the planning of `init`'s writes into transactions, and the
//! answer to a rolled-back one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// What Consul answers to a transaction: results on success, errors on a rollback (status 409).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnResults {
    #[serde(default)]
    pub(crate) errors: Option<Vec<TxnError>>,
}

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    pub(crate) op_index: usize,
    pub(crate) what: String,
}

/// Operations in one transaction, at most (Consul's limit).
pub const MAX_TXN_OPS: usize = 64;
/// Largest transaction body sent: Consul refuses request bodies over 512 KiB; this leaves room for
/// headers and rounding.
pub const MAX_TXN_BODY: usize = 500_000;

/// One write of `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    Set { key: String, value: String },
    Delete { key: String },
}

impl Write {
    /// The operation as Consul's transaction JSON (values are base64).
    fn to_json(&self) -> String {
        let op = match self {
            Write::Set { key, value } => serde_json::json!({
                "KV": { "Verb": "set", "Key": key, "Value": STANDARD.encode(value) }
            }),
            Write::Delete { key } => serde_json::json!({ "KV": { "Verb": "delete", "Key": key } }),
        };
        op.to_string()
    }
}

/// A step of `init`: a transaction, or one value too large for any transaction body (base64
/// inflates values by a third), written with a plain KV PUT.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Txn { writes: Vec<Write>, body: Vec<u8> },
    Put { key: String, value: String },
}

/// Splits `writes` into steps that keep their order, each transaction at most
/// [`MAX_TXN_OPS`] operations and [`MAX_TXN_BODY`] bytes.
pub(crate) fn plan(writes: Vec<Write>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut ops: Vec<Write> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut size = 2; // the brackets
    let flush =
        |steps: &mut Vec<Step>, ops: &mut Vec<Write>, parts: &mut Vec<String>, size: &mut usize| {
            if !ops.is_empty() {
                let body = format!("[{}]", parts.join(",")).into_bytes();
                steps.push(Step::Txn {
                    writes: std::mem::take(ops),
                    body,
                });
                parts.clear();
                *size = 2;
            }
        };
    for write in writes {
        let json = write.to_json();
        if json.len() + 2 > MAX_TXN_BODY {
            flush(&mut steps, &mut ops, &mut parts, &mut size);
            match write {
                Write::Set { key, value } => steps.push(Step::Put { key, value }),
                // A delete is tiny; a key this long is Consul's to refuse.
                delete @ Write::Delete { .. } => {
                    let body = format!("[{json}]").into_bytes();
                    steps.push(Step::Txn {
                        writes: vec![delete],
                        body,
                    });
                }
            }
            continue;
        }
        if ops.len() == MAX_TXN_OPS || size + json.len() + 1 > MAX_TXN_BODY {
            flush(&mut steps, &mut ops, &mut parts, &mut size);
        }
        size += json.len() + usize::from(!parts.is_empty());
        parts.push(json);
        ops.push(write);
    }
    flush(&mut steps, &mut ops, &mut parts, &mut size);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, bytes: usize) -> Write {
        Write::Set {
            key: key.to_owned(),
            value: "v".repeat(bytes),
        }
    }

    fn flatten(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .flat_map(|step| match step {
                Step::Txn { writes, .. } => writes
                    .iter()
                    .map(|w| match w {
                        Write::Set { key, .. } | Write::Delete { key } => key.clone(),
                    })
                    .collect(),
                Step::Put { key, .. } => vec![key.clone()],
            })
            .collect()
    }

    #[test]
    fn splits_at_sixty_four_operations_keeping_order() {
        let writes: Vec<Write> = (0..150).map(|i| set(&format!("k{i:03}"), 10)).collect();
        let keys: Vec<String> = (0..150).map(|i| format!("k{i:03}")).collect();
        let steps = plan(writes);
        let sizes: Vec<usize> = steps
            .iter()
            .map(|s| match s {
                Step::Txn { writes, .. } => writes.len(),
                Step::Put { .. } => 1,
            })
            .collect();
        assert_eq!(sizes, [64, 64, 22]);
        assert_eq!(flatten(&steps), keys);
    }

    #[test]
    fn splits_by_body_size_and_sends_huge_values_alone() {
        let writes = vec![
            set("a", 200_000),
            set("b", 200_000), // base64: 266,668 bytes each, so a and b cannot share a body
            set("huge", 450_000), // 600,000 bytes of base64: no transaction can carry it
            Write::Delete {
                key: "old".to_owned(),
            },
            set("c", 10),
        ];
        let steps = plan(writes);
        assert_eq!(flatten(&steps), ["a", "b", "huge", "old", "c"]);
        assert!(matches!(&steps[2], Step::Put { key, .. } if key == "huge"));
        assert_eq!(steps.len(), 4, "{steps:?}");
        for step in &steps {
            if let Step::Txn { body, .. } = step {
                assert!(body.len() <= MAX_TXN_BODY, "{}", body.len());
                let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert!(parsed.is_array());
            }
        }
    }

    #[test]
    fn operations_are_consuls_json_with_base64_values() {
        let steps = plan(vec![
            Write::Set {
                key: "ld/features/f".to_owned(),
                value: r#"{"version":1}"#.to_owned(),
            },
            Write::Delete {
                key: "ld/features/old".to_owned(),
            },
        ]);
        let Step::Txn { body, .. } = &steps[0] else {
            panic!()
        };
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"KV": {"Verb": "set", "Key": "ld/features/f", "Value": "eyJ2ZXJzaW9uIjoxfQ=="}},
                {"KV": {"Verb": "delete", "Key": "ld/features/old"}}
            ])
        );
    }
}
