//! The input writer's lines, run through the emulator's model: every row is
//! understood, and its key comes back through the echoed request's labels.

use std::collections::HashMap;

use vertex_batch::{
    data::{
        key::{decode_key_label, key_hash, KeyLabel, KEY_LABEL},
        request::{parse_request_value, parse_response_value, response_text, Prompt},
    },
    emulator::model::{process_gcs_line, ModelCtx},
    BatchRequest, InputEncoder, InputLimits,
};

#[test]
fn encoded_lines_run_in_the_emulator_and_their_keys_come_back() {
    let long_key = format!("doc/{}", "x".repeat(200));
    let rows: Vec<(String, BatchRequest)> = vec![
        ("plain".into(), "Give me a recipe for banana bread.".into()),
        (
            "typed".into(),
            Prompt::text("Summarise this")
                .system("Be brief")
                .temperature(0.2)
                .into(),
        ),
        (
            "raw".into(),
            BatchRequest::json(
                r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"labels":{"team":"a"}}"#,
            )
            .unwrap(),
        ),
        (long_key.clone(), "long key".into()),
    ];
    let hashes: HashMap<_, _> = rows.iter().map(|(k, _)| (key_hash(k), k.clone())).collect();

    let mut encoder = InputEncoder::new(InputLimits::default());
    let mut input = Vec::new();
    for (key, request) in rows.clone() {
        encoder.encode(&key, request, &mut input).unwrap();
    }
    let ctx = ModelCtx {
        model_version: "gemini-2.0-flash-001".into(),
        max_output_tokens: None,
        fail_rows_containing: None,
    };
    let mut keys = Vec::new();
    for line in std::str::from_utf8(&input).unwrap().lines() {
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let error = process_gcs_line(
            line,
            "2024-11-13T14:04:28.376+00:00",
            &ctx,
            &mut scratch,
            &mut out,
        );
        assert_eq!(error, None, "{line}");
        let mut output: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let response = parse_response_value(output["response"].take()).unwrap();
        assert!(response_text(&response).is_some());
        let request = parse_request_value(output["request"].take()).unwrap();
        let key = match decode_key_label(&request.labels[KEY_LABEL]).unwrap() {
            KeyLabel::Exact(k) => k,
            KeyLabel::Hash(h) => hashes[&h].clone(),
        };
        keys.push(key);
    }
    let expected: Vec<String> = rows.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, expected);
}
