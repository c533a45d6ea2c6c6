//! The Adyen Checkout adapter against a local stub on 127.0.0.1: the stub checks the
//! method, the path, the headers and the JSON body exactly as Adyen documents them for a
//! MOTO card payment, and answers Authorised, Refused (plain and "Not enough balance"),
//! Error, and HTTP errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tonewall::payment::adyen::Adyen;
use tonewall::payment::{Card, ChargeRequest, ChargeStatus, DeclineReason, Gateway, GatewayError};

#[derive(Default)]
struct Seen {
    problems: Vec<String>,
    requests: usize,
}

async fn stub(
    seen: Arc<Mutex<Seen>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut problems = Vec::new();
    if method != Method::POST {
        problems.push(format!("method {method}"));
    }
    if uri.path() != "/v71/payments" {
        problems.push(format!("path {}", uri.path()));
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if h("x-api-key") != "test-api-key" {
        problems.push("X-API-Key".into());
    }
    if h("content-type") != "application/json" {
        problems.push("Content-Type".into());
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pan = body["paymentMethod"]["number"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let expected = json!({
        "amount": {"currency": "AUD", "value": 1234},
        "merchantAccount": "AcmeMOTO",
        "reference": "ses_abc",
        "shopperInteraction": "Moto",
        "paymentMethod": {
            "type": "scheme",
            "number": pan,
            "expiryMonth": "03",
            "expiryYear": "2030",
            "cvc": "737",
            "holderName": "Jo \"Q\" Citizen"
        }
    });
    if body != expected {
        problems.push(format!("body {body}"));
    }
    if h("idempotency-key") != "tonewall-ses_abc" {
        problems.push("Idempotency-Key".into());
    }
    if body.get("recurringProcessingModel").is_some() {
        problems.push("recurringProcessingModel present".into());
    }
    {
        let mut s = seen.lock().expect("lock");
        s.requests += 1;
        s.problems.extend(problems.iter().cloned());
    }
    if !problems.is_empty() {
        return (StatusCode::UNPROCESSABLE_ENTITY, "{}".to_string());
    }
    let answer = match pan.as_str() {
        "4111111111111111" => json!({"pspReference": "PSP0001", "resultCode": "Authorised", "amount": {"currency": "AUD", "value": 1234}, "merchantReference": "ses_abc"}),
        "4000000000000002" => json!({"pspReference": "PSP0002", "resultCode": "Refused", "refusalReason": "Refused", "refusalReasonCode": "2"}),
        "4000000000009995" => json!({"pspReference": "PSP0003", "resultCode": "Refused", "refusalReason": "Not enough balance", "refusalReasonCode": "12"}),
        "4000000000000119" => json!({"pspReference": "PSP0004", "resultCode": "Error", "refusalReason": "Acquirer Error"}),
        "5555555555554444" => {
            return (
                StatusCode::UNAUTHORIZED,
                json!({"status": 401, "errorCode": "000", "message": "HTTP Status Response - Unauthorized", "errorType": "security"}).to_string(),
            )
        }
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "{}".to_string()),
    };
    (StatusCode::OK, answer.to_string())
}

fn req(pan: &str) -> ChargeRequest {
    ChargeRequest {
        amount_minor: 1234,
        currency: "AUD".into(),
        description: "Order 42".into(),
        cardholder: "Jo \"Q\" Citizen".into(),
        card: Card::new(pan.as_bytes(), b"0330", b"737").expect("card"),
        reference: "ses_abc".into(),
        idempotency_key: "tonewall-ses_abc".into(),
    }
}

#[tokio::test]
async fn adyen_requests_are_exactly_the_documented_shape() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |m, u, h, b| stub(s2.clone(), m, u, h, b));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // A trailing slash on the base URL is fine.
    let gw = Adyen::new(
        &format!("http://{addr}/"),
        "AcmeMOTO",
        "test-api-key".into(),
        Duration::from_secs(5),
    )
    .expect("adyen");
    assert_eq!(gw.name(), "adyen");

    let ok = gw
        .charge(&req("4111111111111111"))
        .await
        .expect("authorised");
    assert_eq!(ok.status, ChargeStatus::Approved);
    assert_eq!(ok.reference, "PSP0001");
    let d = gw.charge(&req("4000000000000002")).await.expect("refused");
    assert_eq!(
        (d.status, d.decline_reason),
        (ChargeStatus::Declined, Some(DeclineReason::Declined))
    );
    assert_eq!(d.reference, "PSP0002");
    let f = gw.charge(&req("4000000000009995")).await.expect("refused");
    assert_eq!(f.decline_reason, Some(DeclineReason::InsufficientFunds));
    let e = gw.charge(&req("4000000000000119")).await;
    assert!(matches!(e, Err(GatewayError::Processing(_))), "{e:?}");
    let e = gw.charge(&req("5555555555554444")).await;
    assert_eq!(e, Err(GatewayError::Http(401)));
    let e = gw.charge(&req("6011111111111117")).await;
    assert_eq!(e, Err(GatewayError::Http(500)));
    {
        let s = seen.lock().expect("lock");
        assert!(s.problems.is_empty(), "stub found: {:?}", s.problems);
        assert_eq!(s.requests, 6);
    }
    // Error messages carry no card data.
    for e in [
        GatewayError::Http(500),
        GatewayError::Processing("resultCode Error".into()),
    ] {
        assert!(!e.to_string().contains("4000"));
    }

    // Nobody listening: a transport error, not a panic.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let gw = Adyen::new(
        &format!("http://{dead_addr}"),
        "AcmeMOTO",
        "k".into(),
        Duration::from_secs(2),
    )
    .expect("adyen");
    let e = gw.charge(&req("4111111111111111")).await;
    assert!(matches!(e, Err(GatewayError::Transport(_))), "{e:?}");
}
