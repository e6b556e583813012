//! The reader's tests: every family's lines, borrowing, and lines that
//! must never panic.

#[allow(unused_imports)]
use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{json::*, parse::*, types::*};

/// Gemini lines.
mod gemini {
    use super::*;

    fn parse(line: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn parse_err(line: &str) -> String {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes())).unwrap_err()
    }

    const OK: &str = r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","request":{"contents":[{"role":"user","parts":[{"text":"hi","file_data":null}]}]},"response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"},{"text":" there"}]},"finishReason":"STOP","avgLogprobs":-0.2}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":120,"totalTokenCount":129,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.0-flash-001","createTime":"2024-11-13T14:04:28.123456789Z","responseId":"abc"}}"#;

    #[test]
    fn a_succeeded_row_has_its_text_reason_and_usage() {
        let p = parse(OK);
        assert_eq!(p.row.key(), Some("q1"));
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!("not a success")
        };
        assert_eq!(a.text(), "Hello there");
        assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(a.usage().total_tokens, 129);
        assert_eq!(a.model_version(), Some("gemini-2.0-flash-001"));
        let typed = a.response().unwrap();
        assert_eq!(typed.candidates.len(), 1);
        assert_eq!(typed.response_id, "abc");
    }

    #[test]
    fn keys_and_times_read_the_same_from_the_line_or_copied() {
        // Borrowed from the line (an answer keeps it), unescaped on the way
        // (a copy), and on a failed row (which keeps no line).
        let ok = parse(OK);
        assert_eq!(ok.row.key(), Some("q1"));
        assert_eq!(
            ok.row.processed_time_str(),
            Some("2024-11-13T14:04:28.376+00:00")
        );
        assert!(format!("{:?}", ok.row).contains(r#"key: Some("q1")"#));
        let escaped = parse(
            r#"{"key":"a\"b\u00e9","status":"","processed_time":"2024-11-13T14:04:28Z","response":{"promptFeedback":{"blockReason":"SAFETY"}}}"#,
        );
        assert_eq!(escaped.row.key(), Some("a\"bé"));
        assert_eq!(
            escaped.row.processed_time_str(),
            Some("2024-11-13T14:04:28Z")
        );
        let failed =
            parse(r#"{"key":"k9","status":"boom","processed_time":"2024-11-13T14:04:28Z"}"#);
        assert_eq!(failed.row.key(), Some("k9"));
        assert!(failed.row.processed_time().is_some());
        let mut relabelled = ok.row.clone();
        relabelled.set_key(Some("other".into()));
        assert_eq!(relabelled.key(), Some("other"));
    }

    #[test]
    fn thoughts_are_not_text_and_unknown_reasons_are_kept() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"thinking","thought":true},{"text":"answer"}]},"finishReason":"SOMETHING_NEW"}]}}"#,
        );
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(a.text(), "answer");
        assert_eq!(a.finish_reason().unwrap().as_str(), "SOMETHING_NEW");
        assert!(a.response().is_ok(), "an unknown enum value must not fail");
    }

    #[test]
    fn max_tokens_is_a_success_with_its_reason() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"cut"}]},"finishReason":"MAX_TOKENS"}]}}"#,
        );
        assert!(
            matches!(p.row.outcome(), Outcome::Succeeded(a) if a.finish_reason() == Some(&FinishReason::MaxTokens))
        );
    }

    #[test]
    fn a_failed_row_parses_its_embedded_error() {
        let p = parse(
            r#"{"key":"k","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid payload\", \"status\": \"INVALID_ARGUMENT\"}}","processed_time":"2024-11-13T14:04:28Z","request":{}}"#,
        );
        let Outcome::Failed(e) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(e.code(), Some(400));
        assert_eq!(e.message(), "Invalid payload");
        assert_eq!(e.status_name(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn a_blocked_prompt_is_blocked() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"no"},"usageMetadata":{"promptTokenCount":5}}}"#,
        );
        let Outcome::Blocked(b) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(b.reason(), Some("PROHIBITED_CONTENT"));
        assert_eq!(b.message(), Some("no"));
    }

    #[test]
    fn snake_case_and_nulls_read() {
        let p = parse(
            r#"{"key":"k","status":null,"response":{"candidates":[{"content":{"parts":[{"text":"x"}]},"finish_reason":"STOP"}],"usage_metadata":{"total_token_count":3},"prompt_feedback":null}}"#,
        );
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(a.usage().total_tokens, 3);
    }

    #[test]
    fn the_key_label_stands_in_for_a_dropped_key() {
        let line = format!(
            r#"{{"status":"","request":{{"contents":[],"labels":{{"{}":"rabc"}}}},"response":{{"candidates":[]}}}}"#,
            crate::format::key::KEY_LABEL
        );
        let p = parse(&line);
        assert_eq!(p.row.key(), None);
        assert_eq!(p.key_label.as_deref(), Some("rabc"));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_line(&bytes::Bytes::from(bytes));
        }

        /// Every prefix of a real line either parses or is an error saying
        /// why — never a panic, never a silent success with another key.
        #[test]
        fn every_truncation_of_a_line_is_handled(cut in 0usize..OK.len()) {
            let prefix = &OK[..cut];
            if let Ok(p) = parse_line(&bytes::Bytes::copy_from_slice(prefix.as_bytes())) {
                proptest::prop_assert!(p.row.key().is_none_or(|k| k == "q1"));
            }
        }

        /// Lines with fields of the wrong JSON type are errors or
        /// well-formed rows, never panics.
        #[test]
        fn wrong_types_never_panic(
            key in proptest::sample::select(vec!["\"k\"", "7", "null", "[]", "{}"]),
            status in proptest::sample::select(vec!["\"\"", "\"boom\"", "1", "null", "{}"]),
            response in proptest::sample::select(vec!["null", "1", "\"x\"", "[]", "{}",
                r#"{"candidates":{}}"#, r#"{"candidates":[1]}"#,
                r#"{"candidates":[{"content":{"parts":[{"text":5}]}}]}"#,
                r#"{"usageMetadata":{"totalTokenCount":"x"}}"#,
                r#"{"candidates":[{"finishReason":7}]}"#]),
        ) {
            let line = format!(r#"{{"key":{key},"status":{status},"response":{response}}}"#);
            let _ = parse_line(&bytes::Bytes::from(line));
        }

        /// Any strings (quotes, backslashes, control and non-ASCII
        /// characters: escaped or not, borrowed or copied) read back as
        /// written, on answers, blocked rows and failed rows alike.
        #[test]
        fn strings_read_back_as_written(
            key in "\\PC{0,12}|[\"\\\\\\n\\u{7f}é😀a]{0,6}",
            time in "\\PC{0,8}",
            text in "\\PC{0,12}|[\"\\\\\\t\\u{1}b]{0,6}",
            version in "\\PC{0,8}",
            kind in 0u8..3,
        ) {
            let response = match kind {
                0 => serde_json::json!({
                    "candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": "STOP"}],
                    "modelVersion": version,
                }),
                1 => serde_json::json!({"promptFeedback": {"blockReason": text}}),
                _ => serde_json::Value::Null,
            };
            let status = if kind == 2 { text.as_str() } else { "" };
            let line = serde_json::json!({
                "key": key, "processed_time": time, "status": status, "response": response,
            })
            .to_string();
            if kind == 2 && text.is_empty() {
                // Neither a status nor a response: not an output line.
                proptest::prop_assert!(parse_line(&bytes::Bytes::from(line)).is_err());
                return Ok(());
            }
            let p = parse_line(&bytes::Bytes::from(line)).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(p.row.key(), Some(key.as_str()));
            proptest::prop_assert_eq!(p.row.processed_time_str(), Some(time.as_str()));
            match (kind, p.row.outcome()) {
                (0, Outcome::Succeeded(a)) => {
                    proptest::prop_assert_eq!(a.text(), text.as_str());
                    proptest::prop_assert_eq!(a.model_version(), Some(version.as_str()));
                }
                (1, Outcome::Blocked(b)) => proptest::prop_assert_eq!(b.reason(), Some(text.as_str())),
                (2, Outcome::Failed(e)) => proptest::prop_assert_eq!(e.status(), text.as_str()),
                (k, o) => proptest::prop_assert!(false, "kind {} gave {}", k, o.kind()),
            }
        }
    }

    #[test]
    fn huge_token_counts_saturate_instead_of_wrapping() {
        let line = r#"{"key":"k","status":"","response":{"candidates":[{}],"usageMetadata":{"totalTokenCount":1e20}}}"#;
        let Outcome::Succeeded(a) = parse(line).row.into_outcome() else {
            panic!()
        };
        let mut sum = *a.usage();
        sum += *a.usage();
        assert_eq!(sum.total_tokens, u64::MAX);
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            r#"{"key":"k","status":"","response":{"candidates":[{"content":"#,
            r#"{"key":7}"#,
            r#"{"key":"k","status":"","response":"text"}"#,
            r#"{"key":"k","status":"","response":{"candidates":{"a":1}}}"#,
            "[1,2,3]",
        ] {
            assert!(!parse_err(bad).is_empty(), "{bad:?} should fail");
        }
        assert!(
            parse_err(r#"{"key":"k","status":"","response":{"candidates":[{"content":"#)
                .contains("truncated")
        );
        // A status that is neither a string nor an object is read
        // leniently: a failed row carrying it, never a success.
        let odd = parse(r#"{"key":"k","status":5}"#);
        assert!(matches!(odd.row.outcome(), Outcome::Failed(e) if e.message() == "5"));
    }

    #[test]
    fn a_line_with_neither_status_nor_response_is_unreadable_not_failed() {
        // A staged input line (what a batch root holds under input/).
        let input = format!(
            r#"{{"key":"q1","request":{{"contents":[],"labels":{{"{}":"roeyq"}}}}}}"#,
            crate::format::key::KEY_LABEL
        );
        for line in [
            input.as_str(),
            r#"{"key":"q1","status":""}"#,
            r#"{"key":"q1","status":null,"response":null}"#,
            "{}",
        ] {
            let e = parse_err(line);
            assert!(e.contains("neither a status nor a response"), "{line}: {e}");
        }
    }

    #[test]
    fn a_candidate_with_no_content_stopped_for_safety_is_blocked_not_an_answer() {
        for (candidate, reason) in [
            (r#"{"finishReason":"SAFETY"}"#, "SAFETY"),
            (
                r#"{"finishReason":"PROHIBITED_CONTENT","content":{"role":"model"}}"#,
                "PROHIBITED_CONTENT",
            ),
            (
                r#"{"finishReason":"RECITATION","content":{"parts":[]}}"#,
                "RECITATION",
            ),
            (
                r#"{"finish_reason":"BLOCKLIST","content":null}"#,
                "BLOCKLIST",
            ),
            (
                r#"{"finishReason":"SPII","finishMessage":"personal data"}"#,
                "SPII",
            ),
            (r#"{"finishReason":"IMAGE_SAFETY"}"#, "IMAGE_SAFETY"),
        ] {
            let line = format!(
                r#"{{"key":"k","status":"","response":{{"candidates":[{candidate}],"usageMetadata":{{"promptTokenCount":4}}}}}}"#
            );
            let p = parse(&line);
            let Outcome::Blocked(b) = p.row.outcome() else {
                panic!("{line}: {}", p.row.outcome().kind())
            };
            assert_eq!(b.reason(), Some(reason), "{line}");
            assert_eq!(b.finish_reason().map(FinishReason::as_str), Some(reason));
            assert!(!p.row.outcome().needs_retry() && !p.row.outcome().is_success());
            assert_eq!(p.row.outcome().kind(), "blocked");
            assert!(b.raw_response().unwrap().get().contains(reason));
        }
        let spii = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"finishReason":"SPII","finishMessage":"personal data"}]}}"#,
        );
        let Outcome::Blocked(b) = spii.row.outcome() else {
            panic!()
        };
        assert_eq!(b.message(), Some("personal data"));
    }

    #[test]
    fn candidates_with_content_or_a_normal_stop_stay_answers() {
        for candidate in [
            // Truncated, with text or without (thoughts used the budget).
            r#"{"content":{"parts":[{"text":"cut"}]},"finishReason":"MAX_TOKENS"}"#,
            r#"{"finishReason":"MAX_TOKENS"}"#,
            // Cut for safety after some text: the text is kept.
            r#"{"content":{"parts":[{"text":"partial"}]},"finishReason":"SAFETY"}"#,
            // A function call: content, no text.
            r#"{"content":{"parts":[{"functionCall":{"name":"f"}}]},"finishReason":"STOP"}"#,
            r#"{"finishReason":"STOP"}"#,
            r#"{"finishReason":"FINISH_REASON_UNSPECIFIED"}"#,
            "{}",
        ] {
            let line =
                format!(r#"{{"key":"k","status":"","response":{{"candidates":[{candidate}]}}}}"#);
            let p = parse(&line);
            assert!(
                p.row.outcome().is_success(),
                "{line}: {}",
                p.row.outcome().kind()
            );
        }
    }

    #[test]
    fn an_odd_request_or_labels_lose_only_the_key_label() {
        let label = crate::format::key::KEY_LABEL;
        for request in [
            "\"a string\"".to_owned(),
            "[1,{\"labels\":{}}]".to_owned(),
            "7".to_owned(),
            "true".to_owned(),
            r#"{"labels":"x"}"#.to_owned(),
            r#"{"labels":[1,2]}"#.to_owned(),
            r#"{"labels":null}"#.to_owned(),
            format!(r#"{{"labels":{{"{label}":7}}}}"#),
            format!(r#"{{"labels":{{"{label}":{{"a":[1]}}}}}}"#),
        ] {
            for key in [r#""key":"q1","#, ""] {
                let line = format!(
                    r#"{{{key}"status":"boom","request":{request},"processed_time":"2024-11-13T14:04:28Z"}}"#
                );
                let p = parse(&line);
                assert_eq!(p.row.outcome().kind(), "failed", "{line}");
                assert_eq!(p.row.processed_time_str(), Some("2024-11-13T14:04:28Z"));
                assert_eq!(p.row.key(), (!key.is_empty()).then_some("q1"), "{line}");
                assert_eq!(p.key_label, None, "{line}");
            }
        }
        // An escaped label value is read too.
        let p = parse(&format!(
            r#"{{"status":"","request":{{"labels":{{"{label}":"r\u006fe"}}}},"response":{{"candidates":[{{}}]}}}}"#
        ));
        assert_eq!(p.key_label.as_deref(), Some("roe"));
    }

    #[test]
    fn the_key_label_is_taken_out_of_a_missing_request_and_nothing_else() {
        let label = crate::format::key::KEY_LABEL;
        let strip = |r: &str| {
            let raw = RawValue::from_string(r.to_owned()).unwrap();
            without_key_label(&raw).map(|r| r.get().to_owned())
        };
        for (input, want) in [
            (
                format!(
                    r#"{{"contents": [ ], "labels": {{"team": "x", "{label}": "rme"}}, "z": 1.0e0}}"#
                ),
                r#"{"contents": [ ], "labels": {"team": "x"}, "z": 1.0e0}"#,
            ),
            (
                format!(r#"{{"labels":{{"{label}":"rme","team":"x"}},"contents":[]}}"#),
                r#"{"labels":{"team":"x"},"contents":[]}"#,
            ),
            (
                format!(r#"{{"contents":[],"labels":{{"{label}":"rme"}}}}"#),
                r#"{"contents":[]}"#,
            ),
            (
                format!(r#"{{"labels":{{"{label}":"rme"}},"contents":[]}}"#),
                r#"{"contents":[]}"#,
            ),
            (format!(r#"{{"labels":{{"{label}":"rme"}}}}"#), "{}"),
            (
                format!(r#"{{"labels":{{"{label}":"a","b":"c","{label}":"d"}}}}"#),
                r#"{"labels":{"b":"c"}}"#,
            ),
        ] {
            assert_eq!(strip(&input).as_deref(), Some(want), "{input}");
        }
        for untouched in [
            r#"{"contents":[],"labels":{"team":"x"}}"#,
            r#"{"contents":[]}"#,
            r#"{"labels":null}"#,
            r#"[1]"#,
        ] {
            assert_eq!(strip(untouched), None, "{untouched}");
        }
    }

    /// JSON objects as requests: a few members of any kind, with labels of
    /// any kind or none.
    fn request_strategy() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{1,4}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let labels = prop_oneof![
            Just(None),
            Just(Some(serde_json::Value::Null)),
            Just(Some(serde_json::json!(7))),
            Just(Some(serde_json::json!(["x"]))),
            Just(Some(serde_json::json!({"a": {"b": 1}}))),
            proptest::collection::btree_map("[a-z][a-z0-9_]{0,5}", "[a-z0-9_-]{0,6}", 0..4)
                .prop_map(|m| Some(serde_json::Value::Object(
                    m.into_iter().map(|(k, v)| (k, v.into())).collect()
                ))),
        ];
        (
            proptest::collection::btree_map("[a-km-z]{1,6}", value, 0..4),
            labels,
        )
            .prop_map(|(members, labels)| {
                let mut m: serde_json::Map<String, serde_json::Value> =
                    members.into_iter().collect();
                if let Some(l) = labels {
                    m.insert("labels".into(), l);
                }
                serde_json::Value::Object(m)
            })
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Any output line: no panic; when it parses, what it holds is read;
        /// when its key and status are fine, an odd `request` never makes it
        /// unreadable.
        #[test]
        fn any_line_is_read_as_far_as_it_can_be(
            request in proptest::prop_oneof![
                request_strategy(),
                proptest::prelude::any::<i32>().prop_map(serde_json::Value::from),
                "\\PC{0,6}".prop_map(serde_json::Value::from),
                proptest::strategy::Just(serde_json::Value::Null),
                proptest::collection::vec(request_strategy(), 0..2).prop_map(serde_json::Value::from),
            ],
            key in proptest::option::of("\\PC{1,8}"),
            status in "\\PC{1,8}",
            junk in "\\PC{0,40}",
        ) {
            let _ = parse_line(&bytes::Bytes::from(junk));
            let mut line = serde_json::json!({"status": status, "request": request});
            if let Some(k) = &key {
                line["key"] = k.clone().into();
            }
            let p = parse_line(&bytes::Bytes::from(line.to_string()))
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(p.row.key(), key.as_deref());
            let Outcome::Failed(e) = p.row.outcome() else {
                return Err(proptest::test_runner::TestCaseError::fail("not failed"));
            };
            proptest::prop_assert_eq!(e.status(), status.as_str());
        }

        /// A request staged by the input writer and taken back from a
        /// missing row is the request given (labels aside: none, `null` and
        /// `{}` all read as none), and a new batch accepts it again, staging
        /// the same line.
        #[test]
        fn a_missing_request_goes_back_into_a_new_batch(
            request in request_strategy(),
            key in "\\PC{1,80}",
        ) {
            use crate::format::input::{BatchRequest, InputEncoder, InputLimits};
            let raw = BatchRequest::json(&request.to_string()).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut staged = Vec::new();
            if InputEncoder::new(InputLimits::default()).encode(&key, raw, &mut staged).is_err() {
                return Ok(()); // e.g. a labels map the writer refuses
            }
            let text = std::str::from_utf8(&staged).unwrap().trim_end();
            let (k, staged_request) = crate::format::input::parse_input_text(text)
                .map_err(proptest::test_runner::TestCaseError::fail)?
                .unwrap();
            proptest::prop_assert_eq!(&k, &key);
            let row = ResultRow::missing(k, staged_request);
            let Outcome::Missing(m) = row.outcome() else { unreachable!() };
            let back: serde_json::Value = serde_json::from_str(m.request().get()).unwrap();
            let mut want = request.clone();
            if want.get("labels").is_some_and(|l| l.is_null() || l.as_object().is_some_and(|o| o.is_empty())) {
                want.as_object_mut().unwrap().remove("labels");
            }
            proptest::prop_assert_eq!(&back, &want);
            let mut again = Vec::new();
            let raw = BatchRequest::json(m.request().get()).unwrap();
            InputEncoder::new(InputLimits::default())
                .encode(&key, raw, &mut again)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            // The same line as staged (labels may move to the end).
            let parsed = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            proptest::prop_assert_eq!(parsed(&again), parsed(&staged));
        }

        /// Taking the label out never panics, whatever the text.
        #[test]
        fn taking_the_label_out_of_any_text_never_panics(text in "\\PC{0,64}|[{}\\[\\]\":, a-z_]{0,40}") {
            if let Ok(raw) = RawValue::from_string(text.clone()) {
                if let Some(out) = without_key_label(&raw) {
                    proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(out.get()).is_ok());
                }
            }
            let _ = object_members(&text);
        }
    }
}
mod borrowing {
    use super::*;

    /// An answer's strings without escapes are ranges of its line, not
    /// copies (serde copies an `Option<Cow<str>>` unless told otherwise);
    /// escaped ones are unescaped copies and read the same.
    #[test]
    fn unescaped_strings_of_an_answer_are_ranges_of_its_line() {
        let line = br#"{"key":"q1","processed_time":"2024-11-13T14:04:28Z","response":{"candidates":[{"content":{"parts":[{"text":"hello"}]},"finishReason":"STOP"}],"modelVersion":"m-1"}}"#;
        let p = parse_line(&bytes::Bytes::from_static(line)).unwrap();
        assert!(matches!(p.row.inner.key, Some(Text::InLine(..))));
        assert!(matches!(p.row.inner.processed_time, Some(Text::InLine(..))));
        let Outcome::Succeeded(a) = &p.row.inner.outcome else {
            panic!("not a success")
        };
        assert!(matches!(a.text, Text::InLine(..)));
        assert!(matches!(a.model_version, Some(Text::InLine(..))));
        assert_eq!(
            (p.row.key(), a.text(), a.model_version()),
            (Some("q1"), "hello", Some("m-1"))
        );

        let escaped = br#"{"key":"q\u0031","response":{"candidates":[{"content":{"parts":[{"text":"a\nb"}]}}]}}"#;
        let p = parse_line(&bytes::Bytes::from_static(escaped)).unwrap();
        assert!(matches!(p.row.inner.key, Some(Text::Owned(_))));
        assert_eq!(p.row.key(), Some("q1"));
        assert_eq!(p.row.text(), Some("a\nb"));
    }
}

mod families {
    //! The output reader for every model family.
    use super::*;

    fn parse(line: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn outcome(line: &str) -> Outcome {
        parse(line).row.into_outcome()
    }

    fn answer(line: &str) -> Answer {
        match outcome(line) {
            Outcome::Succeeded(a) => a,
            o => panic!("{} for {line}", o.kind()),
        }
    }

    #[test]
    fn gemini_usage_reads_tool_use_and_audio_tokens() {
        let line = r#"{"key":"g1","status":"","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":50,"thoughtsTokenCount":300,"cachedContentTokenCount":1024,"toolUsePromptTokenCount":40,"totalTokenCount":1590,"trafficType":"BATCH","promptTokensDetails":[{"modality":"TEXT","tokenCount":900},{"modality":"AUDIO","tokenCount":250},{"modality":"AUDIO","tokenCount":50}],"cacheTokensDetails":[{"modality":"TEXT","tokenCount":1024}],"candidatesTokensDetails":[{"modality":"TEXT","tokenCount":50}]},"modelVersion":"gemini-2.5-flash"}}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 1200,
                candidates_tokens: 50,
                thoughts_tokens: 300,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                tool_use_prompt_tokens: 40,
                // The two AUDIO entries, summed.
                prompt_audio_tokens: 300,
                total_tokens: 1590,
            }
        );
        // snake_case spellings (BigQuery exports) read the same.
        let snake = r#"{"key":"g2","status":"","response":{"candidates":[{"content":{"parts":[{"text":"ok"}]}}],"usage_metadata":{"prompt_token_count":10,"tool_use_prompt_token_count":3,"prompt_tokens_details":[{"modality":"AUDIO","token_count":4}]}}}"#;
        let u = *answer(snake).usage();
        assert_eq!(
            (
                u.prompt_tokens,
                u.tool_use_prompt_tokens,
                u.prompt_audio_tokens
            ),
            (10, 3, 4)
        );
        // Odd details (not an array of objects) are a bad line, not a panic.
        let odd = r#"{"key":"g3","status":"","response":{"candidates":[{}],"usageMetadata":{"promptTokensDetails":{"modality":"AUDIO"}}}}"#;
        assert!(parse_line(&bytes::Bytes::from(odd)).is_err());
    }

    #[test]
    fn claude_usage_counts_cache_reads_and_writes_in_the_prompt() {
        let line = r#"{"custom_id":"c1","status":"","response":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"cache_creation_input_tokens":2000,"cache_read_input_tokens":3000,"output_tokens":7}}}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                // 20 + 2000 + 3000
                prompt_tokens: 5020,
                candidates_tokens: 7,
                cached_tokens: 3000,
                cache_write_tokens: 2000,
                total_tokens: 5027,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn openai_usage_splits_reasoning_from_the_answer() {
        let line = r#"{"custom_id":"o1","response":{"status_code":200,"body":{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":900,"total_tokens":1900,"prompt_tokens_details":{"cached_tokens":512},"completion_tokens_details":{"reasoning_tokens":850}}}},"error":null}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 1000,
                // 900 - 850: the reasoning is counted once, in thoughts.
                candidates_tokens: 50,
                thoughts_tokens: 850,
                cached_tokens: 512,
                total_tokens: 1900,
                ..Usage::default()
            }
        );
        // More reasoning than completion (a confused server): 0, no wrap.
        let odd = r#"{"custom_id":"o2","response":{"choices":[{"message":{"content":"x"}}],"usage":{"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":5}}}}"#;
        assert_eq!(answer(odd).usage().candidates_tokens, 0);
    }

    #[test]
    fn text_embedding_rows_tell_their_billed_characters() {
        let line = r#"{"instance":{"content":"  Why is\tthe sky blue?\n"},"predictions":[{"embeddings":{"statistics":{"token_count":7,"truncated":false},"values":[0.1]}}],"status":""}"#;
        let row = parse_output_line(line).unwrap();
        // "Whyistheskyblue?": white space is not billed.
        assert_eq!(row.input_chars(), Some(16));
        // Code points, not bytes: "日本語" is 3 characters (9 bytes).
        let cjk = r#"{"instance":{"content":"日本語"},"predictions":[{"embeddings":{"values":[0.1]}}],"status":""}"#;
        assert_eq!(parse_output_line(cjk).unwrap().input_chars(), Some(3));
        // BigQuery rows: the `content` column, predictions as a string.
        let bq = r#"{"content":"a b c","predictions":"[{\"embeddings\":{\"values\":[0.5]}}]","status":""}"#;
        assert_eq!(parse_output_line(bq).unwrap().input_chars(), Some(3));
        // Other families echo no `instance.content`.
        let gemini = r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"x"}]}}]}}"#;
        assert_eq!(parse_output_line(gemini).unwrap().input_chars(), None);
        // A failed row keeps no line.
        let failed = r#"{"instance":{"content":"abc"},"status":"boom"}"#;
        assert_eq!(parse_output_line(failed).unwrap().input_chars(), None);
    }

    #[test]
    fn gemini_embeddings_read_their_values_and_tokens() {
        let a = answer(
            r#"{"key":"d1","request":{"content":{"parts":[{"text":"sky"}]}},"status":"","processed_time":"2026-01-01T00:00:00Z","response":{"embedding":{"values":[0.25,-1.5e-3,1]},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}}"#,
        );
        let e = a.embedding().unwrap();
        assert_eq!(e.values().unwrap(), [0.25, -1.5e-3, 1.0]);
        assert_eq!(e.json(), "[0.25,-1.5e-3,1]");
        assert_eq!(e.dimensions(), 3);
        assert_eq!((a.usage().prompt_tokens, a.usage().total_tokens), (4, 4));
        assert_eq!(a.text(), "");
        let failed = outcome(
            r#"{"key":"d2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"no text\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
        );
        assert!(
            matches!(failed, Outcome::Failed(e) if e.status_name() == Some("INVALID_ARGUMENT"))
        );
        assert!(matches!(
            outcome(r#"{"key":"d","status":"","response":{"embedding":{}}}"#),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn text_embeddings_read_predictions_as_json_or_as_a_string() {
        let line = r#"{"key":"t1","instance":{"content":"sky"},"predictions":[{"embeddings":{"statistics":{"token_count":8,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#;
        let p = parse(line);
        assert_eq!(p.row.key(), Some("t1"));
        let a = answer(line);
        assert_eq!(a.embedding().unwrap().values().unwrap(), [0.6, 0.8]);
        assert_eq!(a.usage().prompt_tokens, 8);
        // BigQuery's `predictions` column: the same array as a JSON string.
        let bq = r#"{"key":"t1","content":"sky","predictions":"[{\"embeddings\":{\"statistics\":{\"token_count\":2},\"values\":[1,2,3]}}]","status":""}"#;
        assert_eq!(answer(bq).embedding().unwrap().dimensions(), 3);
        assert!(matches!(
            outcome(r#"{"key":"t","predictions":[],"status":""}"#),
            Outcome::Failed(_)
        ));
        assert!(
            matches!(outcome(r#"{"key":"t","instance":{},"status":"Invalid content"}"#), Outcome::Failed(e) if e.message() == "Invalid content")
        );
    }

    #[test]
    fn claude_reads_text_stop_reason_and_usage() {
        let line = r#"{"custom_id":"c1","request":{"messages":[]},"status":"","processed_time":"2026-01-01T00:00:00Z","response":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":4}}}"#;
        let p = parse(line);
        assert_eq!(p.row.key(), Some("c1"));
        let a = answer(line);
        assert_eq!(a.text(), "Hello there");
        assert_eq!(a.finish_reason(), Some(&FinishReason::MaxTokens));
        // Claude's `input_tokens` leaves the cache reads out; the prompt
        // counts them (as Gemini's does): 10 + 4.
        assert_eq!(a.usage().prompt_tokens, 14);
        assert_eq!(a.usage().candidates_tokens, 3);
        assert_eq!(a.usage().cached_tokens, 4);
        assert_eq!(a.usage().total_tokens, 17);
        assert_eq!(a.model_version(), Some("claude-sonnet-4-5"));
        let stop = answer(
            r#"{"custom_id":"c","response":{"content":[{"type":"text","text":"x"}],"stop_reason":"end_turn"}}"#,
        );
        assert_eq!(stop.finish_reason(), Some(&FinishReason::Stop));
        let refused =
            outcome(r#"{"custom_id":"c","response":{"content":[],"stop_reason":"refusal"}}"#);
        assert!(matches!(refused, Outcome::Blocked(_)), "{}", refused.kind());
        let err = outcome(
            r#"{"custom_id":"c","response":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}"#,
        );
        assert!(matches!(err, Outcome::Failed(e) if e.message().contains("Overloaded")));
        let status_object = outcome(
            r#"{"custom_id":"c","status":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert!(matches!(status_object, Outcome::Failed(e) if e.message().contains("Quota")));
    }

    #[test]
    fn open_models_read_the_envelope_or_the_bare_completion() {
        let line = r#"{"id":"batch_req_1","custom_id":"o1","response":{"status_code":200,"request_id":"r","body":{"id":"c","object":"chat.completion","model":"meta/llama","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":1}}}},"error":null}"#;
        assert_eq!(parse(line).row.key(), Some("o1"));
        let a = answer(line);
        assert_eq!(a.text(), "Hi!");
        assert_eq!(a.finish_reason(), Some(&FinishReason::MaxTokens));
        assert_eq!(
            (
                a.usage().prompt_tokens,
                a.usage().candidates_tokens,
                a.usage().total_tokens
            ),
            // `completion_tokens` (2) holds the reasoning token: the
            // answer's own tokens are 2 - 1, as Gemini counts them.
            (5, 1, 7)
        );
        assert_eq!(a.usage().thoughts_tokens, 1);
        // The completion straight under `response`.
        let bare = answer(
            r#"{"custom_id":"o1","response":{"choices":[{"message":{"content":"Yo"},"finish_reason":"stop"}]}}"#,
        );
        assert_eq!(
            (bare.text(), bare.finish_reason()),
            ("Yo", Some(&FinishReason::Stop))
        );
        let emb = answer(
            r#"{"custom_id":"o2","response":{"status_code":200,"body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,0.5]}],"usage":{"prompt_tokens":2,"total_tokens":2}}}}"#,
        );
        assert_eq!(emb.embedding().unwrap().values().unwrap(), [0.5, 0.5]);
        assert_eq!(emb.usage().prompt_tokens, 2);
        let http = outcome(
            r#"{"custom_id":"o3","response":{"status_code":429,"body":{"error":{"message":"slow down"}}}}"#,
        );
        assert!(
            matches!(&http, Outcome::Failed(e) if e.message().contains("slow down")),
            "{http:?}"
        );
        let top = outcome(
            r#"{"custom_id":"o4","response":null,"error":{"code":400,"message":"bad body","status":"INVALID_ARGUMENT"}}"#,
        );
        assert!(
            matches!(&top, Outcome::Failed(e) if e.code() == Some(400)),
            "{top:?}"
        );
        let filtered = outcome(
            r#"{"custom_id":"o5","response":{"body":{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}}}"#,
        );
        assert!(matches!(filtered, Outcome::Blocked(_)));
        assert!(matches!(
            outcome(r#"{"custom_id":"o6","response":{"choices":[]}}"#),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn the_public_one_line_parser_reads_any_family() {
        let row = parse_output_line("{\"custom_id\":\"x\",\"response\":{\"choices\":[{\"message\":{\"content\":\"a\"}}]}}\r\n").unwrap();
        assert_eq!((row.key(), row.text()), (Some("x"), Some("a")));
        let err = parse_output_line("{\"custom_id\":").unwrap_err();
        assert!(
            matches!(err, crate::error::Error::Output { line: 1, .. }),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Lines of every family with fields of any JSON type: rows or
        /// errors, never panics.
        #[test]
        fn family_lines_of_wrong_types_never_panic(
            key in proptest::sample::select(vec![r#""key":"k""#, r#""custom_id":"k""#, r#""custom_id":5"#, r#""key":null"#]),
            body in proptest::sample::select(vec![
                r#""response":{"embedding":{"values":"x"}}"#,
                r#""response":{"embedding":[1]}"#,
                r#""predictions":[{"embeddings":{"values":{}}}]"#,
                r#""predictions":"[1"#,
                r#""predictions":7"#,
                r#""response":{"content":[{"text":5}],"stop_reason":1}"#,
                r#""response":{"content":"x","usage":{"input_tokens":"a"}}"#,
                r#""response":{"choices":[{"message":7}]}"#,
                r#""response":{"status_code":"x","body":[]}"#,
                r#""response":{"status_code":500}"#,
                r#""response":{"body":{"body":{"body":{"choices":[]}}}}"#,
                r#""response":{"data":[{"embedding":"x"}]}"#,
                r#""error":[1,2]"#,
                r#""status":[],"response":{}"#,
            ]),
        ) {
            let line = format!("{{{key},{body}}}");
            let _ = parse_line(&bytes::Bytes::from(line));
        }

        /// Typed fields of every family read back as written.
        #[test]
        fn family_fields_read_back_as_written(
            key in "\\PC{1,12}",
            text in "\\PC{0,16}",
            values in proptest::collection::vec(-1.0e3f32..1.0e3, 1..8),
            tokens in 0u32..1_000_000,
            family in 0u8..4,
        ) {
            let line = match family {
                0 => serde_json::json!({"key": key, "status": "", "response": {"embedding": {"values": values}, "usageMetadata": {"promptTokenCount": tokens}}}),
                1 => serde_json::json!({"key": key, "status": "", "instance": {"content": text}, "predictions": [{"embeddings": {"statistics": {"token_count": tokens}, "values": values}}]}),
                2 => serde_json::json!({"custom_id": key, "status": "", "response": {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {"input_tokens": tokens, "output_tokens": 1}}}),
                _ => serde_json::json!({"custom_id": key, "response": {"status_code": 200, "body": {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": tokens, "completion_tokens": 1}}}, "error": null}),
            }.to_string();
            let row = parse_output_line(&line).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(row.key(), Some(key.as_str()));
            let Outcome::Succeeded(a) = row.outcome() else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("not a success: {line}")));
            };
            proptest::prop_assert_eq!(a.usage().prompt_tokens, u64::from(tokens));
            if family < 2 {
                proptest::prop_assert_eq!(a.embedding().unwrap().values().unwrap(), values);
            } else {
                proptest::prop_assert_eq!(a.text(), text.as_str());
                proptest::prop_assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
                proptest::prop_assert_eq!(a.usage().candidates_tokens, 1);
            }
        }
    }
}
