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

/// One write of `init`, its value borrowed from the data being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write<'a> {
    Set { key: String, value: &'a str },
    Delete { key: String },
}

impl Write<'_> {
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
pub(crate) enum Step<'a> {
    Txn {
        writes: Vec<Write<'a>>,
        body: Vec<u8>,
    },
    Put {
        key: String,
        value: &'a str,
    },
}

/// Splits `writes` into steps that keep their order, each transaction at most
/// [`MAX_TXN_OPS`] operations and [`MAX_TXN_BODY`] bytes. Each step is made as it is asked
/// for, so that only one transaction's body exists at a time, never the whole data set
/// encoded.
pub(crate) fn plan<'a>(
    writes: impl IntoIterator<Item = Write<'a>>,
) -> impl Iterator<Item = Step<'a>> {
    let mut writes = writes.into_iter().peekable();
    std::iter::from_fn(move || {
        let mut ops = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let mut size = 2; // the brackets
        while let Some(write) = writes.peek() {
            let json = write.to_json();
            if json.len() + 2 > MAX_TXN_BODY {
                if !ops.is_empty() {
                    // The transaction so far goes first; this write is the next step.
                    break;
                }
                return match writes.next()? {
                    Write::Set { key, value } => Some(Step::Put { key, value }),
                    // A delete is tiny; a key this long is Consul's to refuse.
                    delete @ Write::Delete { .. } => Some(Step::Txn {
                        writes: vec![delete],
                        body: format!("[{json}]").into_bytes(),
                    }),
                };
            }
            if ops.len() == MAX_TXN_OPS || size + json.len() + 1 > MAX_TXN_BODY {
                break;
            }
            size += json.len() + usize::from(!parts.is_empty());
            parts.push(json);
            ops.push(writes.next()?);
        }
        (!ops.is_empty()).then(|| Step::Txn {
            writes: ops,
            body: format!("[{}]", parts.join(",")).into_bytes(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, bytes: usize) -> Write<'static> {
        Write::Set {
            key: key.to_owned(),
            value: &VALUES[..bytes],
        }
    }

    /// The values the tests write: any length up to 450,000 bytes, borrowed.
    static VALUES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "v".repeat(450_000));

    fn flatten(steps: &[Step<'_>]) -> Vec<String> {
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
        let steps: Vec<Step<'_>> = plan(writes).collect();
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
        let steps: Vec<Step<'_>> = plan(writes).collect();
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
        let steps: Vec<Step<'_>> = plan(vec![
            Write::Set {
                key: "ld/features/f".to_owned(),
                value: r#"{"version":1}"#,
            },
            Write::Delete {
                key: "ld/features/old".to_owned(),
            },
        ])
        .collect();
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
