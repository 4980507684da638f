//! Playlist text: the media playlist of a rendition (LL-HLS while live,
//! VOD once ended) and the multivariant playlist listing the renditions.
//! Pure functions of the index, with integer arithmetic for every number,
//! so two nodes render the same bytes.

use std::fmt::Write;

use tribune_core::SAMPLE_RATE;

use super::fmp4::{AacLcConfig, AudioConfig};
use super::index::RenditionIndex;
use super::layout::{self, AAC_DIR, INIT_URI, MEDIA_PLAYLIST_URI, OPUS_DIR};

/// Multivariant playlists: EXT-X-INDEPENDENT-SEGMENTS and audio-only
/// variants need nothing past version 6.
pub const MULTIVARIANT_VERSION: u32 = 6;

/// Media playlists: EXT-X-MAP without EXT-X-I-FRAMES-ONLY needs 6 (RFC
/// 8216 §7), and EXT-X-SKIP in delta updates needs 9 (RFC 8216bis §8).
pub const MEDIA_PLAYLIST_VERSION: u32 = 9;

/// RFC 8216bis §4.4.3.8: CAN-SKIP-UNTIL is at least six target durations.
const SKIP_BOUNDARY_TARGET_DURATIONS: u64 = 6;

/// RFC 8216bis: PART-HOLD-BACK at least twice the part target, and
/// SHOULD be three times.
const PART_HOLD_BACK_PARTS: u64 = 3;

/// Parts stay listed for segments starting within this many target
/// durations of the playlist's end (RFC 8216bis §6.2.2 lets older ones go).
const PART_LISTING_TARGET_DURATIONS: u64 = 3;

/// Seconds with five decimals, from 48 kHz samples, rounded to nearest.
pub fn format_seconds(samples: u64) -> String {
    let hundred_thousandths =
        (u128::from(samples) * 100_000 + u128::from(SAMPLE_RATE) / 2) / u128::from(SAMPLE_RATE);
    format!(
        "{}.{:05}",
        hundred_thousandths / 100_000,
        hundred_thousandths % 100_000
    )
}

/// ISO 8601 UTC with milliseconds, as EXT-X-PROGRAM-DATE-TIME wants it.
pub fn format_date_time(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01 (the proleptic calendar
/// in 400-year eras of 146 097 days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days end each cycle.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The media playlist of one rendition.
///
/// Live: an EVENT playlist with every segment since the track began (the
/// replay works from the start), LL-HLS parts for the last few segments
/// and a preload hint for the next part. Ended: the same segments as VOD
/// with EXT-X-ENDLIST, no parts.
pub fn media_playlist(index: &RenditionIndex) -> String {
    render_media_playlist(index, false)
}

/// The delta update (`_HLS_skip=YES`, RFC 8216bis §6.2.5.1) of a live
/// media playlist: segments older than the skip boundary are one
/// EXT-X-SKIP line, so a listener's reload stays ~1 KB however long the
/// space has run. The full playlist once ended.
pub fn media_playlist_delta(index: &RenditionIndex) -> String {
    render_media_playlist(index, true)
}

fn render_media_playlist(index: &RenditionIndex, skip: bool) -> String {
    let layout = index.layout();
    let frame = index.config().frame_samples();
    let target = layout.target_duration_secs(frame);
    let part_target = layout.part_target_samples(frame);
    let live = !index.ended();
    let mut out = String::with_capacity(4096);
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("#EXTM3U");
    line(&format!("#EXT-X-VERSION:{MEDIA_PLAYLIST_VERSION}"));
    line(&format!("#EXT-X-TARGETDURATION:{target}"));
    if live {
        line(&format!(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={}",
            format_seconds(SKIP_BOUNDARY_TARGET_DURATIONS * target * SAMPLE_RATE),
            format_seconds(PART_HOLD_BACK_PARTS * part_target)
        ));
        line(&format!(
            "#EXT-X-PART-INF:PART-TARGET={}",
            format_seconds(part_target)
        ));
        line("#EXT-X-PLAYLIST-TYPE:EVENT");
    } else {
        line("#EXT-X-PLAYLIST-TYPE:VOD");
    }
    let first_msn = index
        .segments()
        .first()
        .or(index.open_segment())
        .map_or(0, |s| s.msn);
    line(&format!("#EXT-X-MEDIA-SEQUENCE:{first_msn}"));
    line("#EXT-X-INDEPENDENT-SEGMENTS");
    line(&format!("#EXT-X-MAP:URI=\"{INIT_URI}\""));

    let playlist_end = index
        .open_segment()
        .or(index.segments().last())
        .map_or(0, |s| s.end_granule);
    let parts_from =
        playlist_end.saturating_sub(PART_LISTING_TARGET_DURATIONS * target * SAMPLE_RATE);
    // Delta updates leave out the complete segments that end before the
    // skip boundary (only while live: an ended playlist is fetched once).
    let skip_before =
        playlist_end.saturating_sub(SKIP_BOUNDARY_TARGET_DURATIONS * target * SAMPLE_RATE);
    let skipped = if skip && live {
        index
            .segments()
            .iter()
            .take_while(|s| s.end_granule <= skip_before)
            .count()
    } else {
        0
    };
    if skipped > 0 {
        line(&format!("#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}"));
    }
    let segments = index.segments()[skipped..]
        .iter()
        .chain(index.open_segment());
    for segment in segments {
        line(&format!(
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            format_date_time(segment.first_ingest_ms)
        ));
        if live && segment.start_granule >= parts_from {
            for part in index.parts().filter(|p| p.id.msn == segment.msn) {
                line(&format!(
                    "#EXT-X-PART:DURATION={},URI=\"{}\",INDEPENDENT=YES",
                    format_seconds(part.duration_samples()),
                    layout::part_uri(part.id)
                ));
            }
        }
        let complete = index
            .position()
            .is_some_and(|p| p.segment_complete(segment.msn));
        if complete {
            line(&format!(
                "#EXTINF:{},",
                format_seconds(segment.duration_samples())
            ));
            line(&layout::segment_uri(segment.msn));
        }
    }
    match index.position() {
        Some(position) if live => line(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            layout::part_uri(position.next_part)
        )),
        _ => {}
    }
    if !live {
        line("#EXT-X-ENDLIST");
    }
    out
}

/// One entry of the multivariant playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Media playlist URI relative to the multivariant playlist.
    pub uri: String,
    pub config: AudioConfig,
    /// Codec bitrate in bits per second.
    pub codec_bitrate: u32,
}

impl Variant {
    /// The program's Opus rendition at `bitrate`.
    pub fn opus(bitrate: u32) -> Variant {
        Variant {
            uri: format!("{OPUS_DIR}/{MEDIA_PLAYLIST_URI}"),
            config: AudioConfig::PROGRAM_OPUS,
            codec_bitrate: bitrate,
        }
    }

    /// The AAC-LC rendition encoded from the program.
    pub fn aac(aac: AacLcConfig) -> Variant {
        Variant {
            uri: format!("{AAC_DIR}/{MEDIA_PLAYLIST_URI}"),
            config: AudioConfig::AacLc(aac),
            codec_bitrate: aac.bitrate,
        }
    }

    /// BANDWIDTH: the codec's bitrate plus the fMP4 framing around it
    /// (about 8 bytes per frame and 120 per part), rounded up to 1 kbit/s.
    pub fn bandwidth(&self) -> u64 {
        let frames_per_second = SAMPLE_RATE.div_ceil(u64::from(self.config.frame_samples()));
        let framing_bits = (frames_per_second * 8 + 120) * 8;
        (u64::from(self.codec_bitrate) + framing_bits).div_ceil(1000) * 1000
    }
}

/// `master.m3u8`: one audio-only variant per rendition, Opus first (the
/// program as encoded; hls.js and Chromium play it), AAC for players that
/// need it (Apple's native player). Players skip CODECS they lack.
pub fn multivariant_playlist(variants: &[Variant]) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{MULTIVARIANT_VERSION}");
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    for variant in variants {
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            variant.bandwidth(),
            variant.config.codecs()
        );
        let _ = writeln!(out, "{}", variant.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::layout::HlsLayout;
    use bytes::Bytes;
    use tribune_core::track::Track;

    const EPOCH_MS: u64 = 1_700_000_000_000;

    fn index_after(packets: usize, finish: bool) -> RenditionIndex {
        let mut track = Track::new(4800);
        let mut index = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        for i in 0..packets {
            let data = Bytes::from(vec![0xF8, i as u8]);
            for group in track.push(data, 960, EPOCH_MS + i as u64 * 20) {
                index.push_group(&group).unwrap();
            }
        }
        if finish {
            if let Some(group) = track.finish() {
                index.push_group(&group).unwrap();
            }
            index.finish().unwrap();
        }
        index
    }

    #[test]
    fn numbers_format_exactly() {
        assert_eq!(format_seconds(144_000), "3.00000");
        assert_eq!(format_seconds(48_128), "1.00267");
        assert_eq!(format_seconds(960), "0.02000");
        assert_eq!(format_seconds(0), "0.00000");
        assert_eq!(format_date_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_date_time(EPOCH_MS), "2023-11-14T22:13:20.000Z");
        // a leap day, and the end of a leap year
        assert_eq!(
            format_date_time(1_709_164_800_123),
            "2024-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_date_time(1_735_689_599_999),
            "2024-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_date_time(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn live_playlist_has_the_ll_hls_tags() {
        // 13.5 s: segments 0..=3 complete, segment 4 has part 4.0.
        let text = media_playlist(&index_after(675, false));
        let expected_head = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:3\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=18.00000,PART-HOLD-BACK=3.00000\n\
            #EXT-X-PART-INF:PART-TARGET=1.00000\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
            #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:3.00000,\nseg0.m4s\n";
        assert!(text.starts_with(expected_head), "{text}");
        let expected_tail = "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:29.000Z\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"part3.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"part3.1.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"part3.2.m4s\",INDEPENDENT=YES\n\
            #EXTINF:3.00000,\nseg3.m4s\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:32.000Z\n\
            #EXT-X-PART:DURATION=1.00000,URI=\"part4.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part4.1.m4s\"\n";
        assert!(text.ends_with(expected_tail), "{text}");
        // Parts are listed for the last three target durations only.
        assert!(text.contains("part2.0.m4s"));
        assert!(!text.contains("part1."));
        assert!(!text.contains("ENDLIST"));
        assert_eq!(text.matches("#EXTINF").count(), 4);
        assert!(!text.contains("seg4.m4s"));
    }

    #[test]
    fn delta_updates_skip_all_but_the_last_six_target_durations() {
        // 60.5 s: segments 0..=19 complete, 20 open with one part.
        let index = index_after(3025, false);
        let full = media_playlist(&index);
        let delta = media_playlist_delta(&index);
        // The playlist ends at 61 s; the boundary is 43 s: segments ending
        // by then (0..=13) are skipped, 14 (42-45 s) stays.
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(delta.contains("#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-SKIP:SKIPPED-SEGMENTS=14\n"));
        assert!(!delta.contains("seg13.m4s"));
        assert!(delta.contains("seg14.m4s"));
        // Everything after the skip is the full playlist's text.
        let kept_from = full
            .find("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:02")
            .unwrap();
        let delta_from = delta.find("#EXT-X-PROGRAM-DATE-TIME").unwrap();
        assert_eq!(&full[kept_from..], &delta[delta_from..]);
        assert_eq!(delta.matches("#EXTINF").count(), 6);
        assert_eq!(full.matches("#EXTINF").count(), 20);
        // Short playlists and ended ones skip nothing.
        assert_eq!(
            media_playlist_delta(&index_after(500, false)),
            media_playlist(&index_after(500, false))
        );
        assert_eq!(
            media_playlist_delta(&index_after(3025, true)),
            media_playlist(&index_after(3025, true))
        );
    }

    #[test]
    fn ended_playlist_is_vod_with_endlist() {
        let text = media_playlist(&index_after(200, true));
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(
            text.ends_with("#EXTINF:1.00000,\nseg1.m4s\n#EXT-X-ENDLIST\n"),
            "{text}"
        );
        for absent in ["EXT-X-PART", "PRELOAD-HINT", "SERVER-CONTROL", "EVENT"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert_eq!(text.matches("#EXTINF").count(), 2);
    }

    #[test]
    fn same_track_same_playlist() {
        assert_eq!(
            media_playlist(&index_after(500, false)),
            media_playlist(&index_after(500, false))
        );
    }

    #[test]
    fn an_empty_rendition_renders_headers_only() {
        let index = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        let text = media_playlist(&index);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(!text.contains("EXTINF"));
        assert!(!text.contains("PRELOAD-HINT"));
    }

    #[test]
    fn aac_parts_target_whole_frames() {
        let index = RenditionIndex::new(
            HlsLayout::ONE_SECOND,
            AudioConfig::AacLc(AacLcConfig {
                channels: 2,
                bitrate: 64_000,
            }),
        );
        let text = media_playlist(&index);
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=1.00267\n"));
        assert!(text.contains("PART-HOLD-BACK=3.00800"));
    }

    #[test]
    fn multivariant_lists_opus_then_aac() {
        let text = multivariant_playlist(&[
            Variant::opus(32_000),
            Variant::aac(AacLcConfig {
                channels: 2,
                bitrate: 64_000,
            }),
        ]);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=37000,CODECS=\"opus\"\nopus/media.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=68000,CODECS=\"mp4a.40.2\"\naac/media.m3u8\n"
        );
    }
}
