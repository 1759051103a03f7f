//! Verifies the plain HTTP side of the listener: GET `/` serves the chat page as
//! text/html, `/chat.js`, `/chat.css` and `/healthz` answer 200, other paths 404, other
//! methods 405 with `Allow: GET`, malformed requests 400, and every response carries
//! `Connection: close` and is followed by the server closing the connection.

mod common;

use common::{Server, get_request, http_exchange, request};

#[test]
fn index_serves_the_chat_page_as_html() {
    let server = Server::start(&[]);
    let response = http_exchange(server.addr, &get_request(server.addr, "/"));
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.to_ascii_lowercase().starts_with("text/html"),
        "Content-Type {content_type:?}"
    );
    assert!(!response.body.is_empty(), "empty chat page");
}

#[test]
fn page_assets_and_health_check_answer_200() {
    let server = Server::start(&[]);
    for path in ["/chat.js", "/chat.css", "/healthz"] {
        let response = http_exchange(server.addr, &get_request(server.addr, path));
        assert_eq!(response.status, 200, "GET {path}: {response:?}");
    }
    for path in ["/chat.js", "/chat.css"] {
        let response = http_exchange(server.addr, &get_request(server.addr, path));
        assert!(!response.body.is_empty(), "GET {path}: empty body");
    }
}

#[test]
fn unknown_paths_answer_404() {
    let server = Server::start(&[]);
    for path in [
        "/nope",
        "/chat.jsx",
        "/healthz/extra",
        "/../etc/passwd",
        "/index.html/",
    ] {
        let response = http_exchange(server.addr, &get_request(server.addr, path));
        assert_eq!(response.status, 404, "GET {path}: {response:?}");
    }
}

#[test]
fn other_methods_answer_405_with_allow_get() {
    let server = Server::start(&[]);
    let host = server.addr.to_string();
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let line = format!("{method} / HTTP/1.1");
        let bytes = request(&line, &[("Host", &host), ("Content-Length", "0")]);
        let response = http_exchange(server.addr, &bytes);
        assert_eq!(response.status, 405, "{method} /: {response:?}");
        assert!(
            response.has_token("allow", "GET"),
            "{method} /: no `Allow: GET` in {response:?}"
        );
    }
}

#[test]
fn malformed_requests_answer_400() {
    let server = Server::start(&[]);
    let cases: [&[u8]; 5] = [
        b"NOT AN HTTP REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: localhost\r\n\r\n",
        b"GET\r\nHost: localhost\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ];
    for bytes in cases {
        let response = http_exchange(server.addr, bytes);
        assert_eq!(
            response.status,
            400,
            "{:?}: {response:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn keep_alive_requests_are_still_answered_with_close() {
    let server = Server::start(&[]);
    let host = server.addr.to_string();
    let bytes = request(
        "GET /healthz HTTP/1.1",
        &[("Host", &host), ("Connection", "keep-alive")],
    );
    let response = http_exchange(server.addr, &bytes);
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn only_the_first_of_pipelined_requests_is_answered() {
    let server = Server::start(&[]);
    let mut bytes = get_request(server.addr, "/healthz");
    bytes.extend(get_request(server.addr, "/nope"));
    let response = http_exchange(server.addr, &bytes);
    assert_eq!(response.status, 200, "{response:?}");
    let rest = String::from_utf8_lossy(&response.body);
    assert!(
        !rest.contains("HTTP/1.1 404"),
        "answered a request after `Connection: close`: {rest:?}"
    );
}
