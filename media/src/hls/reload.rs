//! What to do with a playlist or media request at the live edge
//! (RFC 8216bis §6.2.5.2 blocking playlist reload, §6.2.6 preload hints):
//! answer now, hold it (bounded), or refuse it. Pure: the IO shell brings
//! the request and the rendition's position, and does the waiting.

use super::index::LivePosition;
use super::layout::{HlsLayout, PartId};
use tribune_core::SAMPLE_RATE;

/// A blocking reload's delivery directives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockingRequest {
    /// `_HLS_msn`
    pub msn: u64,
    /// `_HLS_part`
    pub part: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    #[error("{0} is not a decimal integer")]
    NotANumber(&'static str),
    #[error("{0} given twice")]
    Repeated(&'static str),
}

impl BlockingRequest {
    /// Reads `_HLS_msn` and `_HLS_part` from a playlist URL's query string
    /// (without the `?`). `Ok(None)` is a plain, non-blocking request.
    /// Other parameters (`_HLS_skip`, cache busters) are ignored.
    pub fn from_query(query: &str) -> Result<Option<BlockingRequest>, DirectiveError> {
        let mut msn = None;
        let mut part = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, slot) = match key {
                "_HLS_msn" => ("_HLS_msn", &mut msn),
                "_HLS_part" => ("_HLS_part", &mut part),
                _ => continue,
            };
            if slot.is_some() {
                return Err(DirectiveError::Repeated(name));
            }
            *slot = Some(decimal_integer(value).ok_or(DirectiveError::NotANumber(name))?);
        }
        match (msn, part) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(DirectiveError::PartWithoutMsn),
            (Some(msn), part) => Ok(Some(BlockingRequest { msn, part })),
        }
    }
}

/// Whether a playlist request asks for a delta update (`_HLS_skip=YES`,
/// or `v2`, which also skips date ranges we never write). Anything else,
/// garbage included, gets the full playlist, which is always correct.
pub fn skip_requested(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| matches!(pair, "_HLS_skip=YES" | "_HLS_skip=v2"))
}

/// RFC 8216 decimal-integer: digits only, fits 64 bits.
fn decimal_integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What to do with a (possibly blocking) playlist request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadDecision {
    /// Send the current playlist now.
    Ready,
    /// Hold the request until `until` is published (for a whole segment:
    /// the part after its last), at most `max_wait_ms`; then answer 503.
    Wait { until: PartId, max_wait_ms: u64 },
    /// 400: asked too far ahead (RFC 8216bis: more than two segments, or
    /// more parts than the Advance Part Limit, past the playlist's end).
    TooFarAhead,
}

/// RFC 8216bis §6.2.5.2: a server that cannot answer within three target
/// durations SHOULD return 503.
pub fn max_wait_ms(layout: &HlsLayout, frame_samples: u32) -> u64 {
    3 * layout.target_duration_secs(frame_samples) * 1000
}

/// Advance Part Limit (RFC 8216bis §6.2.5.2): three parts, or three
/// seconds' worth when parts are shorter than a second.
pub fn advance_part_limit(layout: &HlsLayout, frame_samples: u32) -> u64 {
    let part = layout.part_target_samples(frame_samples);
    if part < SAMPLE_RATE {
        (3 * SAMPLE_RATE).div_ceil(part)
    } else {
        3
    }
}

/// Decides a playlist request. `position` is the rendition's (`None`
/// before its first frame); `frame_samples` its codec frame length.
pub fn reload_decision(
    request: Option<BlockingRequest>,
    position: Option<LivePosition>,
    layout: &HlsLayout,
    frame_samples: u32,
) -> ReloadDecision {
    let Some(request) = request else {
        return ReloadDecision::Ready;
    };
    // What the request waits for: a part, or for a whole segment the part
    // after its last.
    let until = match request.part {
        Some(part) => normalize(layout, request.msn, part),
        None => PartId {
            msn: request.msn.saturating_add(1),
            part: 0,
        },
    };
    let wait = ReloadDecision::Wait {
        until,
        max_wait_ms: max_wait_ms(layout, frame_samples),
    };
    let Some(position) = position else {
        // Nothing published yet: the first part will come (or the shell
        // times out with 503); there is no end to measure "too far" from.
        return wait;
    };
    // Directives are ignored once the playlist has EXT-X-ENDLIST.
    if position.ended {
        return ReloadDecision::Ready;
    }
    let ready = match request.part {
        Some(_) => until < position.next_part,
        None => until <= position.next_part,
    };
    if ready {
        return ReloadDecision::Ready;
    }
    let next = layout.absolute_part(position.next_part);
    let first = layout.absolute_part(position.first_part);
    let last_published = next.checked_sub(1).filter(|&p| p >= first);
    // The playlist's last segment is the one holding its last part.
    let last_msn = last_published.map_or(position.first_part.msn, |p| {
        layout.part_from_absolute(p).msn
    });
    if request.msn > last_msn.saturating_add(2) {
        return ReloadDecision::TooFarAhead;
    }
    if request.part.is_some() {
        let reference = last_published.unwrap_or(first);
        let ahead = layout.absolute_part(until).saturating_sub(reference);
        if ahead > advance_part_limit(layout, frame_samples) {
            return ReloadDecision::TooFarAhead;
        }
    }
    wait
}

/// RFC 8216bis §6.2.5.2: a part index past a segment's last part asks for
/// part 0 of the next segment.
fn normalize(layout: &HlsLayout, msn: u64, part: u64) -> PartId {
    if part >= u64::from(layout.parts_per_segment()) {
        PartId {
            msn: msn.saturating_add(1),
            part: 0,
        }
    } else {
        PartId {
            msn,
            part: part as u32,
        }
    }
}

/// What to do with a request for a part or segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceDecision {
    /// Published: serve it (from memory, or rebuilt from the recording).
    Available,
    /// The part the preload hint names: hold the request until it is
    /// published, at most `max_wait_ms`.
    WaitForPublish { max_wait_ms: u64 },
    /// 404: before the track, past its end, or further ahead than the
    /// hint (RFC 8216bis §6.2.6).
    NotFound,
}

pub fn part_decision(
    id: PartId,
    position: Option<LivePosition>,
    layout: &HlsLayout,
    frame_samples: u32,
) -> ResourceDecision {
    if id.part >= layout.parts_per_segment() {
        return ResourceDecision::NotFound;
    }
    let Some(position) = position else {
        return ResourceDecision::NotFound;
    };
    if position.is_published(id) {
        ResourceDecision::Available
    } else if id == position.next_part && !position.ended {
        ResourceDecision::WaitForPublish {
            max_wait_ms: max_wait_ms(layout, frame_samples),
        }
    } else {
        ResourceDecision::NotFound
    }
}

/// Segments are never hinted: they exist once complete, else 404.
pub fn segment_decision(msn: u64, position: Option<LivePosition>) -> ResourceDecision {
    match position {
        Some(position) if position.segment_complete(msn) => ResourceDecision::Available,
        _ => ResourceDecision::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u32 = 960;

    fn at(msn: u64, part: u32) -> PartId {
        PartId { msn, part }
    }

    /// Live, parts 0.0 ..= 5.0 published, 5.1 next.
    fn live() -> Option<LivePosition> {
        Some(LivePosition {
            first_part: at(0, 0),
            next_part: at(5, 1),
            ended: false,
        })
    }

    fn decide(msn: u64, part: Option<u64>) -> ReloadDecision {
        reload_decision(
            Some(BlockingRequest { msn, part }),
            live(),
            &HlsLayout::ONE_SECOND,
            FRAME,
        )
    }

    fn wait(msn: u64, part: u32) -> ReloadDecision {
        ReloadDecision::Wait {
            until: at(msn, part),
            max_wait_ms: 9_000,
        }
    }

    #[test]
    fn past_and_present_are_ready() {
        assert_eq!(decide(2, None), ReloadDecision::Ready);
        assert_eq!(decide(4, None), ReloadDecision::Ready);
        assert_eq!(decide(4, Some(2)), ReloadDecision::Ready);
        assert_eq!(decide(5, Some(0)), ReloadDecision::Ready);
        assert_eq!(decide(0, Some(0)), ReloadDecision::Ready);
        // No directives: a plain reload.
        assert_eq!(
            reload_decision(None, live(), &HlsLayout::ONE_SECOND, FRAME),
            ReloadDecision::Ready
        );
    }

    #[test]
    fn the_next_part_and_segment_wait() {
        assert_eq!(decide(5, Some(1)), wait(5, 1));
        assert_eq!(decide(5, Some(2)), wait(5, 2));
        // The whole of segment 5: ready once 6.0 is next.
        assert_eq!(decide(5, None), wait(6, 0));
        // Past the last part of segment 5 means 6.0.
        assert_eq!(decide(5, Some(3)), wait(6, 0));
        assert_eq!(decide(5, Some(u64::MAX)), wait(6, 0));
        assert_eq!(decide(6, Some(0)), wait(6, 0));
        assert_eq!(decide(7, None), wait(8, 0));
    }

    #[test]
    fn far_future_is_refused() {
        // Last segment in the playlist is 5: 8 is more than two ahead.
        assert_eq!(decide(8, None), ReloadDecision::TooFarAhead);
        assert_eq!(decide(u64::MAX, None), ReloadDecision::TooFarAhead);
        // Last part is 5.0; 6.1 is four parts ahead, over the limit of 3.
        assert_eq!(decide(6, Some(0)), wait(6, 0));
        assert_eq!(decide(6, Some(1)), ReloadDecision::TooFarAhead);
        assert_eq!(decide(7, Some(0)), ReloadDecision::TooFarAhead);
    }

    #[test]
    fn an_ended_playlist_ignores_directives() {
        let ended = Some(LivePosition {
            ended: true,
            ..live().unwrap()
        });
        for request in [
            BlockingRequest {
                msn: 99,
                part: None,
            },
            BlockingRequest {
                msn: 5,
                part: Some(2),
            },
        ] {
            assert_eq!(
                reload_decision(Some(request), ended, &HlsLayout::ONE_SECOND, FRAME),
                ReloadDecision::Ready
            );
        }
    }

    #[test]
    fn before_the_first_frame_everything_waits() {
        let request = BlockingRequest {
            msn: 0,
            part: Some(0),
        };
        assert_eq!(
            reload_decision(Some(request), None, &HlsLayout::ONE_SECOND, FRAME),
            wait(0, 0)
        );
    }

    #[test]
    fn garbage_directives_are_bad_requests() {
        assert_eq!(BlockingRequest::from_query(""), Ok(None));
        assert_eq!(BlockingRequest::from_query("v=3&x"), Ok(None));
        assert_eq!(
            BlockingRequest::from_query("_HLS_msn=12&_HLS_part=2&_HLS_skip=YES"),
            Ok(Some(BlockingRequest {
                msn: 12,
                part: Some(2)
            }))
        );
        assert_eq!(
            BlockingRequest::from_query("_HLS_msn=7"),
            Ok(Some(BlockingRequest { msn: 7, part: None }))
        );
        assert_eq!(
            BlockingRequest::from_query("_HLS_part=1"),
            Err(DirectiveError::PartWithoutMsn)
        );
        for bad in [
            "_HLS_msn=",
            "_HLS_msn",
            "_HLS_msn=-1",
            "_HLS_msn=+1",
            "_HLS_msn=1.5",
            "_HLS_msn=0x10",
            "_HLS_msn=99999999999999999999",
            "_HLS_msn=1&_HLS_part=two",
            "_HLS_msn=%31",
        ] {
            assert!(
                matches!(
                    BlockingRequest::from_query(bad),
                    Err(DirectiveError::NotANumber(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            BlockingRequest::from_query("_HLS_msn=1&_HLS_msn=2"),
            Err(DirectiveError::Repeated("_HLS_msn"))
        );
    }

    #[test]
    fn delta_updates_only_on_a_well_formed_skip() {
        assert!(skip_requested("_HLS_msn=3&_HLS_skip=YES"));
        assert!(skip_requested("_HLS_skip=v2"));
        for other in [
            "",
            "_HLS_skip=yes",
            "_HLS_skip=NO",
            "_HLS_skip",
            "x_HLS_skip=YES",
        ] {
            assert!(!skip_requested(other), "{other}");
        }
    }

    #[test]
    fn the_advance_part_limit_follows_the_part_target() {
        assert_eq!(advance_part_limit(&HlsLayout::ONE_SECOND, FRAME), 3);
        let half_second = HlsLayout::new(24_000, 6).unwrap();
        assert_eq!(advance_part_limit(&half_second, FRAME), 6);
        assert_eq!(max_wait_ms(&HlsLayout::ONE_SECOND, FRAME), 9_000);
    }

    #[test]
    fn parts_and_segments_exist_only_when_published_or_hinted() {
        let layout = HlsLayout::ONE_SECOND;
        let part = |id| part_decision(id, live(), &layout, FRAME);
        assert_eq!(part(at(5, 0)), ResourceDecision::Available);
        assert_eq!(part(at(0, 0)), ResourceDecision::Available);
        assert_eq!(
            part(at(5, 1)),
            ResourceDecision::WaitForPublish { max_wait_ms: 9_000 }
        );
        assert_eq!(part(at(5, 2)), ResourceDecision::NotFound);
        assert_eq!(part(at(9, 0)), ResourceDecision::NotFound);
        assert_eq!(part(at(1, 3)), ResourceDecision::NotFound);
        assert_eq!(
            part_decision(at(0, 0), None, &layout, FRAME),
            ResourceDecision::NotFound
        );
        let resumed = Some(LivePosition {
            first_part: at(3, 1),
            ..live().unwrap()
        });
        assert_eq!(
            part_decision(at(3, 0), resumed, &layout, FRAME),
            ResourceDecision::NotFound
        );
        assert_eq!(segment_decision(4, live()), ResourceDecision::Available);
        assert_eq!(segment_decision(5, live()), ResourceDecision::NotFound);
        let ended = Some(LivePosition {
            ended: true,
            ..live().unwrap()
        });
        assert_eq!(segment_decision(5, ended), ResourceDecision::Available);
        assert_eq!(segment_decision(6, ended), ResourceDecision::NotFound);
        assert_eq!(
            part_decision(at(5, 1), ended, &layout, FRAME),
            ResourceDecision::NotFound
        );
    }
}
