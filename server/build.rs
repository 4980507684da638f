//! Embeds hls.js, the listener page's HLS player, from the npm registry:
//! `web/package.json` + `web/package-lock.json` pin it, `npm ci` in `web/`
//! (run by `scripts/install-deps.sh`, so by `run.sh` and `test.sh`) puts
//! it in `web/node_modules`, and this copies the file the page loads into
//! `OUT_DIR` for `control/pages.rs` to `include_bytes!`.
//!
//! Without it (a bare `cargo build` on a fresh clone) the server still
//! builds: the asset is empty, `/assets/hls.mjs` answers 404 and the page
//! falls back to the browser's own HLS player or the waiting room. A
//! build warning says how to get it.

use std::path::PathBuf;

const HLS_JS: &str = "../web/node_modules/hls.js/dist/hls.light.min.mjs";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={HLS_JS}");
    println!("cargo:rerun-if-changed=../web/package-lock.json");
    // written by every `npm ci`, with the time of the install
    println!("cargo:rerun-if-changed=../web/node_modules/.package-lock.json");
    let bytes = match std::fs::read(HLS_JS) {
        Ok(b) => b,
        Err(e) => {
            println!(
                "cargo:warning=hls.js is not installed ({HLS_JS}: {e}): the listener page \
                 will have no hls.js player; run `scripts/install-deps.sh` (or `npm ci` in web/) \
                 and build again"
            );
            Vec::new()
        }
    };
    // A strong validator for the asset: FNV-1a of its bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    std::fs::write(out.join("hls.light.min.mjs"), &bytes).expect("write OUT_DIR/hls.light.min.mjs");
    std::fs::write(out.join("hls.etag"), format!("\"{h:016x}\"")).expect("write OUT_DIR/hls.etag");
}
