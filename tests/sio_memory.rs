//! Verifies that an idle socket.io session in a chat room costs the app at most 64 bytes of
//! heap more than a plain WebSocket chat member: the heap the app holds is counted by a global
//! allocator around 20,000 joins of each kind.
//!
//! This is the app's share only (rooms, membership, the socket.io server's sessions); the
//! connection or Engine.IO session in the event loop is counted by the benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use wsrelay::app::{App, Mode};
use wsrelay::room::RoomLimits;

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to `System` with the caller's arguments unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is `System::dealloc`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract for `realloc` is `System::realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 20_000;

fn app() -> App {
    let limits = RoomLimits {
        max_rooms: 10,
        history: 100,
        history_bytes: 64 << 10,
    };
    App::new(Mode::Chat, true, limits, Duration::from_secs(25))
}

/// Heap bytes per client the app holds after `join` ran for `N` clients (ids 1..=N), with
/// the actions it queued sent and dropped, and a minute passed (no deadline is pending: the
/// clients are idle).
fn per_client(join: impl Fn(&mut App, usize, &mut Vec<wsrelay::app::Action>)) -> f64 {
    let mut app = app();
    let mut out = Vec::new();
    // One client first, so the room, its log and its history exist before counting.
    join(&mut app, N + 1, &mut out);
    out = Vec::new();
    let before = HELD.load(Ordering::Relaxed);
    for id in 1..=N {
        join(&mut app, id, &mut out);
        out.clear();
    }
    app.handle_timeout(Instant::now() + Duration::from_secs(60), &mut out);
    assert!(out.is_empty(), "nobody is closed: {}", out.len());
    drop(std::mem::take(&mut out));
    assert_eq!(app.poll_timeout(), None);
    let after = HELD.load(Ordering::Relaxed);
    drop(app);
    (after - before) as f64 / N as f64
}

#[test]
fn an_idle_socket_io_session_costs_at_most_64_bytes_more_than_a_chat_member() {
    let plain = per_client(|app, id, out| app.on_join(id, "/lobby", out));
    // Engine.IO numbers its sessions from 2^62 up in the app's id space.
    let sio = per_client(|app, id, out| {
        let (now, id) = (Instant::now(), (1 << (usize::BITS - 2)) + id);
        app.on_eio_open(id, "EIO=4&transport=websocket&room=lobby", now, out);
        app.on_eio_text(id, "0", now, out);
    });
    println!("per client: plain chat member {plain:.1} B, socket.io session {sio:.1} B");
    assert!(plain > 0.0 && sio > 0.0, "{plain} {sio}");
    assert!(
        sio - plain <= 64.0,
        "a socket.io session costs {sio:.1} B, a chat member {plain:.1} B"
    );
}
