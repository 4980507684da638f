//! kill -9 in the middle of a live space: the recording survives.

mod support;

use std::io::Write;
use std::time::Duration;
use support::*;

#[test]
fn kill_9_mid_space_loses_at_most_a_second_and_the_space_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--fsync-ms", "200"]);
    let (id, host) = s.live_space("Crash");
    let mut source = ffmpeg_source(s.addr, &id, &host, 30.0, 440);
    assert!(eventually(Duration::from_secs(10), || {
        s.info(&id)["packets"].as_u64().unwrap_or(0) >= 150
    }));
    let before = s.info(&id)["packets"].as_u64().unwrap();
    s.kill9();
    let _ = source.kill();
    let _ = source.wait();

    // a torn write at the tail, as a crash mid-write leaves it
    let path = dir.path().join("recordings").join(format!("{id}.opus"));
    let clean_len = std::fs::metadata(&path).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"OggS\x00\x00\x00\x00\x00\x00\x00\x00partial page")
        .unwrap();
    drop(f);

    let s = Server::start_in(dir.path(), &["--fsync-ms", "200"]);
    let info = s.info(&id);
    assert_eq!(info["state"], "live", "{info}");
    let recovered = info["packets"].as_u64().unwrap();
    assert!(
        recovered + 50 >= before,
        "recovered {recovered} packets of {before} (more than 1 s lost)"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        clean_len,
        "torn tail truncated"
    );

    // the recording as recovered decodes cleanly while the space is live
    let catch_up = finish_decode(ffmpeg_decode(&s.url(&format!("/spaces/{id}/replay.opus"))));
    assert!(catch_up.errors.is_empty(), "{}", catch_up.errors);
    assert!(
        catch_up.seconds() + 1.0 >= before as f64 * 0.02,
        "{} s recovered",
        catch_up.seconds()
    );

    // the source comes back and the space goes on, on the same timeline
    s.publish(&id, &host, 1.0, 660);
    let r = s.end_space(&id, &host);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = s.replay(&id);
    for w in ogg_pages(&rec).windows(2) {
        let (a, b) = (&w[0].header, &w[1].header);
        assert_eq!(
            b.sequence,
            a.sequence + 1,
            "page sequence continues across the crash"
        );
        assert!(a.sequence < 2 || b.granule > a.granule);
    }
    let replay = finish_decode(ffmpeg_decode(&s.url(&format!("/spaces/{id}/replay.opus"))));
    assert!(
        replay.success && replay.errors.is_empty(),
        "{}",
        replay.errors
    );
    assert!(
        (replay.seconds() - (catch_up.seconds() + 1.0)).abs() < 0.1,
        "{} vs {}",
        replay.seconds(),
        catch_up.seconds()
    );
}
