//! The protocol and configuration docs agree with the code, and the
//! configuration behaves as documented.

use std::path::Path;

mod support;

use citadel_server::docs::{configuration_sections, fill, protocol_sections};
use citadel_server::Config;

fn check(doc: &str, sections: &[(&'static str, String)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let filled = fill(&text, sections);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &filled).unwrap();
    } else {
        assert!(filled == text, "docs/{doc} is out of date: run the tests with UPDATE_GOLDEN=1 and review the diff");
    }
    for (name, _) in sections {
        assert!(text.contains(&format!("<!-- generated:{name} -->")), "docs/{doc} lacks section {name}");
    }
}

#[test]
fn protocol_doc_lists_every_error_code() {
    check("protocol.md", &protocol_sections());
}

#[test]
fn configuration_doc_lists_every_option_and_default() {
    check("configuration.md", &configuration_sections());
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md")).unwrap();
    let defaults: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    for (k, v) in &defaults {
        match v.as_table() {
            Some(t) => t.keys().for_each(|k2| assert!(text.contains(&format!("`{k}.{k2}`")), "{k}.{k2} undocumented")),
            None => assert!(text.contains(&format!("`{k}`")), "{k} undocumented"),
        }
    }
    assert!(text.contains("`token_secret`"));
}

#[test]
fn config_layers_file_then_environment() {
    let dir = std::env::temp_dir().join(format!("citadel-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("citadel.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/a\"\n[limits]\nsession_queue_max = 8\n")
        .unwrap();
    let mut c = Config::from_file(Some(&file)).unwrap();
    assert_eq!((c.listen.port(), c.limits.session_queue_max, c.limits.message_bytes_max), (9000, 8, 16 * 1024));
    c.apply_env(|k| match k {
        "CITADEL_DATA_DIR" => Some("/srv/b".into()),
        "CITADEL_DEV_LOGIN" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!((c.data_dir.to_str().unwrap(), c.dev_login()), ("/srv/b", false));
    c.check().unwrap();
    assert!(c.clone().apply_env(|k| (k == "CITADEL_LISTEN").then(|| "nonsense".into())).is_err());
    assert!(c.s3.is_none(), "player files stay on disk unless told otherwise");
    c.apply_env(|k| match k {
        "CITADEL_S3_BUCKET" => Some("players".into()),
        "CITADEL_S3_ENDPOINT" => Some("http://127.0.0.1:9000".into()),
        _ => None,
    })
    .unwrap();
    let s3 = c.s3.as_ref().expect("a bucket turns S3 on");
    assert_eq!(
        (s3.bucket.as_str(), s3.endpoint.as_deref(), s3.path_style),
        ("players", Some("http://127.0.0.1:9000"), true)
    );

    std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
    let err = format!("{:#}", Config::from_file(Some(&file)).unwrap_err());
    assert!(err.contains("unknown field `lisen`"), "{err}");
    let bad = Config { token_secret: Some("short".into()), ..Config::default() };
    assert!(bad.check().is_err());
    // A rotation: the previous secret comes from the environment too,
    // needs the new one, and must differ from it.
    let new = "n".repeat(32);
    let mut rotating = Config { token_secret: Some(new.clone()), ..Config::default() };
    rotating.apply_env(|k| (k == "CITADEL_TOKEN_SECRET_PREVIOUS").then(|| "o".repeat(32))).unwrap();
    assert_eq!(rotating.token_secret_previous, Some("o".repeat(32)));
    rotating.check().unwrap();
    for (secret, previous, says) in [
        (None, "o".repeat(32), "needs token_secret"),
        (Some(new.clone()), new.clone(), "the same as token_secret"),
        (Some(new.clone()), "short".to_string(), "at least 32 characters"),
    ] {
        let bad = Config { token_secret: secret, token_secret_previous: Some(previous), ..Config::default() };
        let err = format!("{:#}", bad.check().unwrap_err());
        assert!(err.contains(says), "{err}");
    }

    // The journal on JetStream needs NATS, and JetStream's replica bounds.
    std::fs::write(&file, "journal_store = \"jetstream\"\n").unwrap();
    let js = Config::from_file(Some(&file)).unwrap();
    let err = format!("{:#}", js.check().unwrap_err());
    assert!(err.contains("needs [nats]"), "{err}");
    std::fs::write(&file, "journal_store = \"jetstream\"\n[nats]\nurl = \"nats://n:4222\"\njournal_replicas = 7\n")
        .unwrap();
    let err = format!("{:#}", Config::from_file(Some(&file)).unwrap().check().unwrap_err());
    assert!(err.contains("journal_replicas must be 1 to 5"), "{err}");
    std::fs::write(&file, "journal_store = \"jetstram\"\n").unwrap();
    let err = format!("{:#}", Config::from_file(Some(&file)).unwrap_err());
    assert!(err.contains("file") && err.contains("jetstream"), "names what it accepts: {err}");
}

#[test]
fn serve_help_names_the_flags_operators_rely_on() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citadel")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data-dir", "--titles", "--config"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn serve_refuses_a_broken_config_at_start() {
    let dir = std::env::temp_dir().join(format!("citadel-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.toml"), "[limits]\nsession_queue_max = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args(["serve", "--config"])
        .arg(dir.join("c.toml"))
        .args(["--listen", "127.0.0.1:0", "--titles", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("session_queue_max"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_world_action_decodes_and_is_documented() {
    use citadel_server::protocol::{decode, Command, Request, CLAN_ACTIONS, WORLD_ACTIONS};
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")).unwrap();
    for name in WORLD_ACTIONS.iter().chain(CLAN_ACTIONS) {
        assert!(doc.contains(&format!("| `{name}` |")), "docs/protocol.md does not document `{name}`");
        // With no args: either decoded, or refused for a missing field (never unknown).
        let req = Request { id: Default::default(), action: (*name).into(), args: serde_json::Value::Null, key: None };
        match decode(&req) {
            Ok(Command::World(_)) if WORLD_ACTIONS.contains(name) => {}
            Ok(Command::Clan(_)) if CLAN_ACTIONS.contains(name) => {}
            Ok(other) => panic!("`{name}` decoded as {other:?}"),
            Err(e) => assert_eq!(e.code, "invalid_argument", "`{name}`: {e:?}"),
        }
    }
    let full = |action: &str, args: serde_json::Value| Request {
        id: Default::default(),
        action: action.into(),
        args,
        key: None,
    };
    assert!(matches!(decode(&full("raid_start", serde_json::json!({ "defender": "d" }))), Ok(Command::World(_))));
    assert!(matches!(decode(&full("top_scores", serde_json::json!({ "stat": "s" }))), Ok(Command::World(_))));
    assert!(matches!(decode(&full("map_near", serde_json::json!({}))), Ok(Command::World(_))));
}

/// `text` matches `pattern`, where each `...` in the pattern stands for any text.
fn matches_example(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_example_matcher_reads_ellipses_as_any_text() {
    assert!(matches_example(r#"{"a":1,"b":...}"#, r#"{"a":1,"b":{"c":2}}"#));
    assert!(matches_example(r#"{"t":"eyJ...","p":...,"q":2}"#, r#"{"t":"eyJabc","p":[1],"q":2}"#));
    assert!(!matches_example(r#"{"a":1,"b":...}"#, r#"{"a":2,"b":{}}"#));
    assert!(!matches_example(r#"{"id":1}"#, r#"{"id":1.0}"#));
}

/// The walkthrough of docs/protocol.md ("A first session with curl"), run
/// against a real server on the repository's titles: every command's
/// answer matches the one the doc shows (`...` standing for what differs
/// per run), `sleep` moving the server's clock instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_docs_first_session_answers_as_shown() {
    let doc = std::fs::read_to_string(support::root().join("docs/protocol.md")).unwrap();
    let walkthrough = doc.split_once("## A first session with curl").unwrap().1.split_once("\n## ").unwrap().0;
    let s = support::server::start(support::server::fresh_data("doc-walkthrough"), |c| {
        c.titles = support::root().join("titles");
    })
    .await;
    let mut token = String::new();
    let mut checked = 0;
    // Each command: a curl line (with continuations), then `# answer`.
    let mut lines = walkthrough.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(secs) = line.strip_prefix("sleep ") {
            s.advance(secs.parse().unwrap());
            continue;
        }
        if !line.starts_with("curl ") {
            continue;
        }
        let mut command = line.trim_end_matches('\\').to_string();
        while line.ends_with('\\') || command.ends_with(' ') && lines.peek().is_some_and(|l| l.starts_with("  ")) {
            let Some(next) = lines.next() else { break };
            command.push_str(next.trim().trim_end_matches('\\'));
            if !next.ends_with('\\') {
                break;
            }
        }
        let expected = lines.next().and_then(|l| l.strip_prefix("# ")).expect("an answer follows each command");
        let path = command.split("localhost:7070").nth(1).unwrap().split_whitespace().next().unwrap();
        let body = command.split_once("-d '").map(|(_, b)| b.trim_end().trim_end_matches('\'').to_string());
        let client = reqwest::Client::new();
        let r = match body {
            Some(b) => client.post(s.url(path)).header("authorization", format!("Bearer {token}")).body(b),
            None => client.get(s.url(path)),
        };
        let answer = r.send().await.unwrap().text().await.unwrap();
        assert!(matches_example(expected, &answer), "`{command}`\n  doc:    {expected}\n  server: {answer}");
        if let Some(t) = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["token"].as_str() {
            token = t.to_string();
        }
        checked += 1;
    }
    assert!(checked >= 5, "the walkthrough's commands were found ({checked})");
}

#[test]
fn every_push_is_documented_with_an_example_that_decodes() {
    use citadel_server::protocol::Push;
    let doc = std::fs::read_to_string(support::root().join("docs/protocol.md")).unwrap();
    let section = doc.split("## Pushes").nth(1).expect("a section on pushes").split("\n## ").next().unwrap();
    let examples = section.split("```json\n").nth(1).expect("a block of examples").split("```").next().unwrap();
    let mut shown = Vec::new();
    for line in examples.lines() {
        let push: Push = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let again = serde_json::to_value(&push).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(line).unwrap(), "the example is as sent: {line}");
        shown.push(again["event"].as_str().unwrap().to_string());
    }
    // Every kind of push, from the error serde gives for an unknown one.
    let err = serde_json::from_value::<Push>(serde_json::json!({ "event": "zzz" })).unwrap_err().to_string();
    let kinds: Vec<String> = err.split('`').skip(3).step_by(2).map(String::from).collect();
    assert!(!kinds.is_empty(), "{err}");
    assert_eq!(shown, kinds, "one example per push, in declaration order");
    for k in &kinds {
        assert!(section.contains(&format!("| `{k}` |")), "the table of pushes does not list `{k}`");
    }
}
