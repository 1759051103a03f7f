//! Measures what an idle TLS connection keeps on the heap after its handshake: many [`Tls`]
//! servers handshake with rustls clients in memory and the live heap is counted by a
//! counting allocator. Guards that no record buffer stays with an idle connection: what is
//! left is rustls' own state (measured with rustls 0.23 and ring: the 1,144-byte box, two
//! 560-byte AEAD keys, the traffic key schedule and small parts, ~3.2 KiB in all), under a
//! 3.5 KiB bound that one kept 4 KiB buffer would break.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use wsrelay::tls::{Tls, load_config};

#[path = "tls/pki.rs"]
mod pki;
use pki::Pki;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn an_idle_tls_connection_keeps_no_buffers() {
    let pki = Pki::new("mem");
    let server = load_config(&pki.path("first.chain.pem"), &pki.path("first.key")).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if let Ok(suite) = std::env::var("SUITE") {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).contains(&suite));
    }
    let provider = Arc::new(provider);
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    // Warm-up: the session cache and lazily made statics reach their size first.
    let n = 300;
    let mut kept = Vec::new();
    let mut plain = Vec::new();
    let mut handshake = |kept: &mut Vec<Box<Tls>>| {
        let mut tls = Box::new(Tls::new(server.clone()).unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(client.clone(), name).unwrap();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            if !wire.is_empty() {
                tls.handle_input(&mut wire, &mut plain).unwrap();
            }
            let out = tls.unsent().to_vec();
            tls.handle_written(out.len());
            if !out.is_empty() {
                c.read_tls(&mut &out[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            if !c.is_handshaking() && !c.wants_write() && out.is_empty() {
                break;
            }
        }
        assert!(tls.may_send());
        kept.push(tls);
    };
    for _ in 0..n {
        handshake(&mut kept);
    }
    kept.clear();
    kept.shrink_to_fit();
    kept.reserve(n);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..n {
        handshake(&mut kept);
    }
    let per = (LIVE.load(Ordering::Relaxed) - before) / n as isize;
    let boxed = size_of::<Tls>() as isize;
    eprintln!("live heap per idle TLS connection: {per} bytes ({boxed} of them the Tls box)");
    assert!(per <= 3584, "{per} bytes per idle TLS connection");
}
