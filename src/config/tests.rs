//! Unit tests of config parsing and validation.
use super::*;

const KEY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn good() -> String {
    format!(
        r#"
[sip]
listen = ["udp:127.0.0.1:5060"]
[media]
ports = "30000-30099"
[[carrier]]
id = "main"
kind = "manual"
peers = ["127.0.0.1/32", "10.0.0.1"]
[[tenant]]
id = "acme"
carrier = "main"
api_keys = ["{KEY}"]
dnis = ["+61390001000-+61390001009", "+61390002000"]
"#
    )
}

fn err_key(text: &str) -> String {
    match parse_unchecked(text).and_then(|c| validate(&c, &|_| false).map(|_| c)) {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(e.key()), "{msg}");
            e.key().to_string()
        }
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let c = parse_unchecked(&good()).expect("parse");
    validate(&c, &|_| false).expect("valid");
    assert_eq!(c.media.holdback_ms, 40);
    assert_eq!(c.dnis.ttl_s, 30);
    assert_eq!(c.tenant[0].fields, vec!["pan", "expiry", "cvv"]);
    assert_eq!(c.http.listen, "127.0.0.1:8080");
}

#[test]
fn empty_config_is_valid() {
    let c = parse_unchecked("").expect("parse");
    validate(&c, &|_| false).expect("valid");
}

#[test]
fn type_and_unknown_key_errors_name_the_key() {
    let e = parse_unchecked("[media]\nholdback_ms = \"x\"\n").expect_err("bad");
    assert_eq!(e.key(), "media.holdback_ms");
    assert!(e.to_string().contains("invalid type"), "{e}");
    let e = parse_unchecked("[sip]\nfoo = 1\n").expect_err("bad");
    assert_eq!(e.key(), "sip.foo");
    assert!(e.to_string().contains("unknown field `foo`"), "{e}");
    let e = parse_unchecked("bogus = 1\n").expect_err("bad");
    assert!(e.to_string().contains("bogus"), "{e}");
    let e =
        parse_unchecked("[[tenant]]\nid = \"a\"\ncarrier = \"m\"\ndnis = [1]\n").expect_err("bad");
    assert_eq!(e.key(), "tenant[0].dnis[0]");
    let e = parse_unchecked("[sip\n").expect_err("bad");
    assert_eq!(e.key(), "(syntax)");
}

#[test]
fn semantic_errors_name_the_key() {
    let g = good();
    let cases = [
            (g.replace("udp:127.0.0.1:5060", "sctp:1.2.3.4:5"), "sip.listen[0]"),
            (g.replace("udp:127.0.0.1:5060", "udp:nohost"), "sip.listen[0]"),
            (g.replace("30000-30099", "9-3"), "media.ports"),
            (format!("{g}\n[http]\nlisten = \"x\"\n"), "http.listen"),
            (g.replace("127.0.0.1/32", "300.0.0.0/8"), "carrier[0].peers[0]"),
            (g.replace("carrier = \"main\"", "carrier = \"nope\""), "tenant[0].carrier"),
            (g.replace(KEY, "sha256:abc"), "tenant[0].api_keys[0]"),
            (g.replace("+61390001009", "+6139000100"), "tenant[0].dnis[0]"),
            (g.replace("+61390001009", "+61390000009"), "tenant[0].dnis[0]"),
            (g.replace("+61390002000", "+61390001005"), "tenant[0].dnis[1]"),
            (g.replace("+61390002000", "12ab"), "tenant[0].dnis[1]"),
            (
                format!("{g}fields = [\"pan\", \"pin\"]\n"),
                "tenant[0].fields[1]",
            ),
            (
                format!("{g}fields = [\"pan\", \"pan\"]\n"),
                "tenant[0].fields[1]",
            ),
            (
                format!("{g}webhook_url = \"https://x.example/h\"\nwebhook_secret_env = \"TW_NOPE\"\n"),
                "tenant[0].webhook_secret_env",
            ),
            (
                format!("{g}[[tenant]]\nid = \"acme\"\ncarrier = \"main\"\ndnis = [\"1\"]\n"),
                "tenant[1].id",
            ),
            (
                format!("{g}[[carrier]]\nid = \"bw\"\nkind = \"broadworks\"\nxsi_url = \"https://x\"\nuser = \"u\"\npassword_env = \"TW_NOPE\"\n"),
                "carrier[1].password_env",
            ),
            (
                format!("{g}[[carrier]]\nid = \"main\"\nkind = \"manual\"\n"),
                "carrier[1].id",
            ),
        ];
    for (text, key) in cases {
        assert_eq!(err_key(&text), key, "{text}");
    }
    let with_media = |m: &str| format!("[media]\n{m}\n");
    assert_eq!(
        err_key(&with_media("holdback_ms = 5000")),
        "media.holdback_ms"
    );
    assert_eq!(
        err_key(&with_media("codecs = [\"G729\"]")),
        "media.codecs[0]"
    );
    assert_eq!(err_key(&with_media("codecs = []")), "media.codecs");
    assert_eq!(err_key(&with_media("bind = \"x\"")), "media.bind");
    assert_eq!(
        err_key(&with_media("mask_mode = \"loud\"")),
        "media.mask_mode"
    );
}

#[test]
fn env_vars_are_checked_when_set() {
    let text = format!(
        "{}webhook_url = \"https://x.example/h\"\nwebhook_secret_env = \"TW_SET\"\n",
        good()
    );
    let c = parse_unchecked(&text).expect("parse");
    validate(&c, &|v| v == "TW_SET").expect("valid");
}

#[test]
fn dnis_ranges_expand() {
    let v = parse_dnis_entry("+61390001098-+61390001101").expect("range");
    assert_eq!(
        v,
        vec![
            "+61390001098",
            "+61390001099",
            "+61390001100",
            "+61390001101"
        ]
    );
    assert_eq!(parse_dnis_entry("0700").expect("one"), vec!["0700"]);
    assert!(parse_dnis_entry("0700-0699").is_err());
    assert!(parse_dnis_entry("1-1000000").is_err());
    assert!(parse_dnis_entry("").is_err());
}

#[test]
fn payment_gateway_keys() {
    let adyen = |extra: &str| format!("{}[payment]\ngateway = \"adyen\"\n{extra}", good());
    let full = adyen(
        "url = \"https://checkout-test.adyen.com\"\nmerchant_account = \"AcmeMOTO\"\napi_key_env = \"ADYEN_KEY\"\n",
    );
    let c = parse_unchecked(&full).expect("parse");
    validate(&c, &|v| v == "ADYEN_KEY").expect("valid");
    assert_eq!(c.payment.merchant_account.as_deref(), Some("AcmeMOTO"));
    assert_eq!(err_key(&full), "payment.api_key_env"); // env var not set
    assert_eq!(err_key(&adyen("")), "payment.url");
    assert_eq!(err_key(&adyen("url = \"ftp://x\"\n")), "payment.url");
    assert_eq!(
        err_key(&adyen("url = \"https://x.example\"\n")),
        "payment.merchant_account"
    );
    assert_eq!(
        err_key(&format!("{}[payment]\ngateway = \"stripe\"\n", good())),
        "payment.gateway"
    );
    assert_eq!(
        err_key(&format!(
            "{}[payment]\nurl = \"https://x.example\"\n",
            good()
        )),
        "payment.url"
    );
    assert_eq!(
        err_key(&format!("{}[payment]\napi_key = \"secret\"\n", good())),
        "payment.api_key"
    );
}

#[test]
fn xsi_ca_file() {
    let bw = |extra: &str| {
        format!(
            "{}[[carrier]]\nid = \"bw\"\nkind = \"broadworks\"\nxsi_url = \"https://x\"\nuser = \"u\"\npassword_env = \"TW_BW\"\n{extra}",
            good()
        )
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["xsp.example".to_string()]).expect("params");
    let pem = params.self_signed(&key).expect("cert").pem();
    let dir = tempfile::tempdir().expect("dir");
    let good_file = dir.path().join("ca.pem");
    std::fs::write(&good_file, &pem).expect("write");
    let empty_file = dir.path().join("empty.pem");
    std::fs::write(&empty_file, "# no certificate here\n").expect("write");
    let line = |p: &std::path::Path| format!("xsi_ca_file = {:?}\n", p.to_string_lossy());

    let c = parse_unchecked(&bw(&line(&good_file))).expect("parse");
    validate(&c, &|v| v == "TW_BW").expect("valid");
    assert_eq!(
        c.carrier[1].xsi_ca_file.as_deref(),
        Some(&*good_file.to_string_lossy())
    );
    assert_eq!(
        load_ca_file(&good_file.to_string_lossy())
            .expect("load")
            .len(),
        1
    );
    let c = parse_unchecked(&bw("")).expect("parse");
    assert_eq!(c.carrier[1].xsi_ca_file, None);

    let check = |text: String| {
        let c = parse_unchecked(&text).expect("parse");
        let e = validate(&c, &|v| v == "TW_BW").expect_err("accepted");
        assert!(e.to_string().starts_with(e.key()), "{e}");
        e.key().to_string()
    };
    assert_eq!(check(bw(&line(&empty_file))), "carrier[1].xsi_ca_file");
    assert_eq!(
        check(bw(&line(&dir.path().join("missing.pem")))),
        "carrier[1].xsi_ca_file"
    );
    let manual = good().replace(
        "kind = \"manual\"",
        &format!("kind = \"manual\"\n{}", line(&good_file)),
    );
    assert_eq!(check(manual), "carrier[0].xsi_ca_file");
}
