//! Verifies chat mode (the default): `{"name","msg"}` from any client reaches every
//! client, the sender included, as `{"type":"message","name","msg"}`, in one order
//! shared by all; joins and leaves are announced to everyone connected as
//! `{"type":"notification","event","count","msg"}` with the new count; invalid input
//! (bad JSON, missing or non-string fields, empty or too long name/msg) gets
//! `{"type":"error"}` to the sender only; a binary message gets close 1003.

mod common;

use serde_json::{Value, json};
use tungstenite::Message;

use common::{OP_BINARY, RawClient, Server, Ws, connect_ws, ws_close, ws_recv_text, ws_send};

/// The next live message: the welcome and the room history a connection starts with (see
/// `tests/rooms.rs`) are skipped.
#[track_caller]
fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let text = ws_recv_text(ws);
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent non-JSON {text:?}: {e}"));
        if value["type"] != "welcome" && value["history"] != true {
            return value;
        }
    }
}

#[track_caller]
fn expect_notification(ws: &mut Ws, event: &str, count: u64) {
    let value = recv_json(ws);
    assert_eq!(value["type"], "notification", "{value}");
    assert_eq!(value["event"], event, "{value}");
    assert_eq!(value["count"], count, "{value}");
    let msg = value["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no msg: {value}"));
    assert!(
        msg.contains(&count.to_string()),
        "msg lacks {count}: {value}"
    );
}

#[track_caller]
fn expect_message(ws: &mut Ws, name: &str, msg: &str) {
    let value = recv_json(ws);
    assert_eq!(value["type"], "message", "{value}");
    assert_eq!(value["name"], name, "{value}");
    assert_eq!(value["msg"], msg, "{value}");
}

#[track_caller]
fn expect_error(ws: &mut Ws, sent: &str) {
    let value = recv_json(ws);
    assert_eq!(value["type"], "error", "sent {sent:?}, got {value}");
    assert!(value["msg"].is_string(), "sent {sent:?}, got {value}");
}

fn say(ws: &mut Ws, name: &str, msg: &str) {
    ws_send(
        ws,
        Message::text(json!({ "name": name, "msg": msg }).to_string()),
    );
}

/// Connects clients one by one, each time waiting for every client's join notice.
fn join_all(server: &Server, n: u64) -> Vec<Ws> {
    let mut clients: Vec<Ws> = Vec::new();
    for count in 1..=n {
        clients.push(connect_ws(server));
        for client in &mut clients {
            expect_notification(client, "join", count);
        }
    }
    clients
}

#[test]
fn three_clients_see_joins_messages_in_one_order_and_leaves() {
    let server = Server::start(&[]);
    let mut clients = join_all(&server, 3);
    let names = ["alice", "bob", "carol"];
    for (client, name) in clients.iter_mut().zip(names) {
        say(client, name, &format!("hi, I am {name}"));
    }
    let mut seen = Vec::new();
    for client in &mut clients {
        let mut order = Vec::new();
        for _ in 0..3 {
            let value = recv_json(client);
            assert_eq!(value["type"], "message", "{value}");
            let name = value["name"].as_str().expect("name").to_owned();
            assert_eq!(value["msg"], format!("hi, I am {name}"), "{value}");
            order.push(name);
        }
        seen.push(order);
    }
    assert!(
        seen.iter().all(|order| *order == seen[0]),
        "clients saw different orders: {seen:?}"
    );
    let mut sorted = seen[0].clone();
    sorted.sort();
    assert_eq!(sorted, names, "each message exactly once");

    let mut carol = clients.pop().unwrap();
    ws_close(&mut carol);
    for client in &mut clients {
        expect_notification(client, "leave", 2);
    }
    // A leave without a close frame (TCP just goes away) is announced too.
    drop(clients.pop());
    expect_notification(&mut clients[0], "leave", 1);
    say(&mut clients[0], "alice", "alone now");
    expect_message(&mut clients[0], "alice", "alone now");
}

#[test]
fn text_is_carried_exactly() {
    let server = Server::start(&[]);
    let mut clients = join_all(&server, 2);
    let tricky = "quote \" backslash \\ newline \n tab \t </script> ünïcödé 😀 \u{0001}";
    say(&mut clients[0], "名前 \"x\"", tricky);
    for client in &mut clients {
        expect_message(client, "名前 \"x\"", tricky);
    }
}

#[test]
fn invalid_input_gets_an_error_to_the_sender_only() {
    let server = Server::start(&[]);
    let mut clients = join_all(&server, 2);
    let long_name = "n".repeat(65);
    let long_msg = "m".repeat(4001);
    let invalid = [
        "not json".to_owned(),
        "{\"name\":\"a\",\"msg\":\"b\"".to_owned(),
        "[]".to_owned(),
        "\"just a string\"".to_owned(),
        "null".to_owned(),
        json!({ "msg": "no name" }).to_string(),
        json!({ "name": "no msg" }).to_string(),
        json!({ "name": 1, "msg": "x" }).to_string(),
        json!({ "name": "a", "msg": ["x"] }).to_string(),
        json!({ "name": null, "msg": "x" }).to_string(),
        json!({ "name": "", "msg": "x" }).to_string(),
        json!({ "name": "a", "msg": "" }).to_string(),
        json!({ "name": long_name, "msg": "x" }).to_string(),
        json!({ "name": "a", "msg": long_msg }).to_string(),
    ];
    for input in &invalid {
        ws_send(&mut clients[0], Message::text(input.clone()));
        expect_error(&mut clients[0], input);
    }
    // If any error or message had reached client 1, it would come before this.
    say(&mut clients[1], "bob", "first thing you see");
    expect_message(&mut clients[1], "bob", "first thing you see");
    expect_message(&mut clients[0], "bob", "first thing you see");
}

#[test]
fn limits_are_inclusive_and_count_characters() {
    let server = Server::start(&[]);
    let mut clients = join_all(&server, 2);
    let cases = [
        ("n".repeat(64), "m".repeat(4000)),
        ("é".repeat(64), "ü".repeat(4000)),
        ("x".to_owned(), "y".to_owned()),
    ];
    for (name, msg) in &cases {
        say(&mut clients[0], name, msg);
        for client in &mut clients {
            expect_message(client, name, msg);
        }
    }
}

#[test]
fn binary_message_gets_close_1003() {
    let server = Server::start(&[]);
    let mut client = RawClient::open(&server);
    let welcome = client.read_text();
    assert!(
        welcome.contains("welcome"),
        "expected the welcome, got {welcome:?}"
    );
    let join = client.read_text();
    assert!(
        join.contains("join"),
        "expected the join notice, got {join:?}"
    );
    client.send_frame(true, OP_BINARY, b"{\"name\":\"a\",\"msg\":\"b\"}");
    client.expect_close(1003);
    client.finish_close(1003);
}
