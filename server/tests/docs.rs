//! The protocol and configuration docs agree with the code, and the
//! configuration behaves as documented.

use std::path::Path;

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
    assert_eq!((c.data_dir.to_str().unwrap(), c.dev_login), ("/srv/b", false));
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
        let req = Request { id: Default::default(), action: (*name).into(), args: serde_json::Value::Null };
        match decode(&req) {
            Ok(Command::World(_)) if WORLD_ACTIONS.contains(name) => {}
            Ok(Command::Clan(_)) if CLAN_ACTIONS.contains(name) => {}
            Ok(other) => panic!("`{name}` decoded as {other:?}"),
            Err(e) => assert_eq!(e.code, "invalid_argument", "`{name}`: {e:?}"),
        }
    }
    let full = |action: &str, args: serde_json::Value| Request { id: Default::default(), action: action.into(), args };
    assert!(matches!(decode(&full("raid_start", serde_json::json!({ "defender": "d" }))), Ok(Command::World(_))));
    assert!(matches!(decode(&full("top_scores", serde_json::json!({ "stat": "s" }))), Ok(Command::World(_))));
    assert!(matches!(decode(&full("map_near", serde_json::json!({}))), Ok(Command::World(_))));
}
