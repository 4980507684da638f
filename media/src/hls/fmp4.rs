//! CMAF fMP4 for the HLS tier: one init segment per rendition and one
//! `moof`+`mdat` fragment per part. The boxes are mp4-atom's; this module
//! only decides their contents, and decides them from the track alone (no
//! clock, no random ids, no creation times), so two nodes write the same
//! bytes for the same samples.

use bytes::Bytes;
use mp4_atom::{
    Audio, Codec, Dinf, Dops, Dref, DrefEntry, Encode, Esds, FourCC, Ftyp, Hdlr, Mdat, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf,
    Trak, Trex, Trun, TrunEntry, Url,
};

use crate::opus::OpusHead;

/// Media timescale of every rendition: the track's 48 kHz granules, so a
/// fragment's decode time *is* a track granule.
pub const TIMESCALE: u32 = 48_000;

/// The only track in each rendition's files.
pub const TRACK_ID: u32 = 1;

/// AAC-LC frames are always 1024 samples.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// The program's Opus packets are 20 ms.
pub const OPUS_PROGRAM_FRAME_SAMPLES: u32 = 960;

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("a fragment needs at least one sample")]
    NoSamples,
    #[error("sample {0} has zero duration")]
    ZeroDuration(usize),
    #[error("{0} bytes of samples do not fit one fragment")]
    TooLarge(usize),
    #[error("unsupported channel count {0}: mono or stereo only")]
    Channels(u8),
    #[error("mp4 box encoding: {0}")]
    Box(#[from] mp4_atom::Error),
}

/// AAC-LC as Tribune sends it: 48 kHz, mono or stereo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AacLcConfig {
    pub channels: u8,
    /// Target bitrate in bits per second (the esds and the playlist's
    /// BANDWIDTH are derived from it).
    pub bitrate: u32,
}

/// What one rendition carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioConfig {
    Opus(OpusHead),
    AacLc(AacLcConfig),
}

impl AudioConfig {
    /// The program track as it is: Opus with the program's fixed head.
    pub const PROGRAM_OPUS: AudioConfig = AudioConfig::Opus(OpusHead::PROGRAM);

    /// RFC 6381 codec string for the playlists' CODECS attribute.
    pub fn codecs(&self) -> &'static str {
        match self {
            AudioConfig::Opus(_) => "opus",
            AudioConfig::AacLc(_) => "mp4a.40.2",
        }
    }

    pub fn channels(&self) -> u8 {
        match self {
            AudioConfig::Opus(head) => head.channels,
            AudioConfig::AacLc(aac) => aac.channels,
        }
    }

    /// Duration of one codec frame in 48 kHz samples, as the rendition
    /// normally carries it (parts are rounded up to whole frames).
    pub fn frame_samples(&self) -> u32 {
        match self {
            AudioConfig::Opus(_) => OPUS_PROGRAM_FRAME_SAMPLES,
            AudioConfig::AacLc(_) => AAC_FRAME_SAMPLES,
        }
    }

    fn sample_entry(&self) -> Result<Codec, Fmp4Error> {
        let channels = self.channels();
        if !(1..=2).contains(&channels) {
            return Err(Fmp4Error::Channels(channels));
        }
        let audio = Audio {
            data_reference_index: 1,
            channel_count: u16::from(channels),
            sample_size: 16,
            sample_rate: (TIMESCALE as u16).into(),
        };
        Ok(match self {
            AudioConfig::Opus(head) => Codec::Opus(Opus {
                audio,
                dops: Dops {
                    output_channel_count: head.channels,
                    pre_skip: head.pre_skip,
                    input_sample_rate: head.input_rate,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            }),
            AudioConfig::AacLc(aac) => Codec::Mp4a(Mp4a {
                audio,
                esds: aac_esds(*aac),
                btrt: None,
                taic: None,
            }),
        })
    }

    /// CMAF brands, plus the codec's own where one exists.
    fn compatible_brands(&self) -> Vec<FourCC> {
        let codec_brand = match self {
            AudioConfig::Opus(_) => b"Opus",
            AudioConfig::AacLc(_) => b"caac",
        };
        vec![
            b"iso6".into(),
            b"cmfc".into(),
            b"mp41".into(),
            codec_brand.into(),
        ]
    }
}

/// The esds of AAC-LC at 48 kHz. mp4-atom derives the two-byte
/// AudioSpecificConfig from profile, frequency index and channels.
fn aac_esds(aac: AacLcConfig) -> Esds {
    use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
    /// ISO/IEC 14496-1 objectTypeIndication for MPEG-4 Audio.
    const MPEG4_AUDIO: u8 = 0x40;
    /// ISO/IEC 14496-1 streamType AudioStream.
    const AUDIO_STREAM: u8 = 0x05;
    /// Audio object type 2: AAC-LC.
    const AAC_LC: u8 = 2;
    /// Sampling frequency index of 48 kHz.
    const FREQ_48K: u8 = 3;
    Esds {
        es_desc: EsDescriptor {
            es_id: TRACK_ID as u16,
            depends_on_es_id: None,
            url: None,
            ocr_es_id: None,
            stream_priority: 0,
            dec_config: DecoderConfig {
                object_type_indication: MPEG4_AUDIO,
                stream_type: AUDIO_STREAM,
                up_stream: 0,
                buffer_size_db: Default::default(),
                max_bitrate: aac.bitrate,
                avg_bitrate: aac.bitrate,
                dec_specific: Some(DecoderSpecific {
                    profile: AAC_LC,
                    freq_index: FREQ_48K,
                    chan_conf: aac.channels,
                    raw: Vec::new(),
                }),
            },
            sl_config: SLConfig::default(),
        },
    }
}

/// The init segment (`ftyp` + `moov`) of a rendition: one audio track,
/// no samples, `mvex` announcing that the samples come in fragments.
pub fn init_segment(config: &AudioConfig) -> Result<Bytes, Fmp4Error> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: config.compatible_brands(),
    };
    let trak = Trak {
        tkhd: Tkhd {
            track_id: TRACK_ID,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Default::default()
        },
        edts: None,
        meta: None,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: TIMESCALE,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: b"soun".into(),
                name: "Tribune".into(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![DrefEntry::Url(Url {
                            location: String::new(),
                        })],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![config.sample_entry()?],
                    },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        senc: None,
        tref: None,
        udta: None,
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: TIMESCALE,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        meta: None,
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                ..Default::default()
            }],
        }),
        trak: vec![trak],
        udta: None,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(768);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// One sample of a fragment: an Opus packet or an AAC frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    /// Duration in 48 kHz samples.
    pub duration: u32,
    pub data: &'a [u8],
}

/// One CMAF chunk: `moof` (`mfhd`, `traf` with `tfhd`, `tfdt`, `trun`)
/// followed by `mdat`. `base_decode_time` is the track granule where the
/// first sample starts, so consecutive fragments (from any node) continue
/// each other's timeline exactly.
pub fn media_fragment(
    sequence_number: u32,
    base_decode_time: u64,
    samples: &[Sample<'_>],
) -> Result<Bytes, Fmp4Error> {
    let first = samples.first().ok_or(Fmp4Error::NoSamples)?;
    if let Some(zero) = samples.iter().position(|s| s.duration == 0) {
        return Err(Fmp4Error::ZeroDuration(zero));
    }
    let payload_len: usize = samples.iter().map(|s| s.data.len()).sum();
    // Sizes and the data offset are 32-bit in these boxes.
    if payload_len > i32::MAX as usize / 2 {
        return Err(Fmp4Error::TooLarge(payload_len));
    }
    // The usual run has one duration (20 ms packets, 1024-sample AAC
    // frames): say it once in tfhd instead of once per sample.
    let uniform = samples.iter().all(|s| s.duration == first.duration);
    let entries: Vec<TrunEntry> = samples
        .iter()
        .map(|s| TrunEntry {
            duration: (!uniform).then_some(s.duration),
            size: Some(s.data.len() as u32),
            flags: None,
            cts: None,
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                default_sample_duration: uniform.then_some(first.duration),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: base_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: entries.into(),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the moof's first byte to the first
    // sample: the moof's own size (fixed once written) plus mdat's header.
    let mut probe = Vec::with_capacity(256);
    moof.encode(&mut probe)?;
    const MDAT_HEADER: usize = 8;
    let data_offset = (probe.len() + MDAT_HEADER) as i32;
    for trun in &mut moof.traf[0].trun {
        trun.data_offset = Some(data_offset);
    }
    let mut data = Vec::with_capacity(payload_len);
    for sample in samples {
        data.extend_from_slice(sample.data);
    }
    let mut out = Vec::with_capacity(probe.len() + MDAT_HEADER + payload_len);
    moof.encode(&mut out)?;
    Mdat { data }.encode(&mut out)?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Decode, TrunSamples};

    fn packets(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![0xF8, i as u8, 0xAA]).collect()
    }

    fn samples(data: &[Vec<u8>], duration: u32) -> Vec<Sample<'_>> {
        data.iter().map(|d| Sample { duration, data: d }).collect()
    }

    #[test]
    fn opus_init_segment_parses_back_with_the_program_head() {
        let init = init_segment(&AudioConfig::PROGRAM_OPUS).unwrap();
        let mut buf = &init[..];
        let ftyp = Ftyp::decode(&mut buf).unwrap();
        assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
        let moov = Moov::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        let trex = &moov.mvex.as_ref().unwrap().trex[0];
        assert_eq!(trex.track_id, TRACK_ID);
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.mdhd.timescale, TIMESCALE);
        assert_eq!(trak.mdia.hdlr.handler, b"soun".into());
        let Codec::Opus(opus) = &trak.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not an Opus sample entry");
        };
        assert_eq!(opus.audio.channel_count, 2);
        assert_eq!(opus.dops.output_channel_count, OpusHead::PROGRAM.channels);
        assert_eq!(opus.dops.pre_skip, OpusHead::PROGRAM.pre_skip);
        assert_eq!(opus.dops.input_sample_rate, 48_000);
    }

    #[test]
    fn aac_init_segment_carries_an_esds_for_aac_lc_48k() {
        let config = AudioConfig::AacLc(AacLcConfig {
            channels: 1,
            bitrate: 48_000,
        });
        let init = init_segment(&config).unwrap();
        let mut buf = &init[..];
        Ftyp::decode(&mut buf).unwrap();
        let moov = Moov::decode(&mut buf).unwrap();
        let Codec::Mp4a(mp4a) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not an mp4a sample entry");
        };
        let dec = &mp4a.esds.es_desc.dec_config;
        assert_eq!(dec.object_type_indication, 0x40);
        let asc = dec.dec_specific.as_ref().unwrap();
        // AudioSpecificConfig: AOT 2, frequency index 3, 1 channel.
        assert_eq!(asc.raw, vec![0x11, 0x88]);
        assert_eq!((asc.profile, asc.freq_index, asc.chan_conf), (2, 3, 1));
        assert_eq!(config.codecs(), "mp4a.40.2");
    }

    #[test]
    fn multichannel_is_refused() {
        let head = OpusHead {
            channels: 6,
            ..OpusHead::PROGRAM
        };
        assert!(matches!(
            init_segment(&AudioConfig::Opus(head)),
            Err(Fmp4Error::Channels(6))
        ));
    }

    #[test]
    fn fragment_parses_back_with_offsets_pointing_at_the_samples() {
        let data = packets(50);
        let frag = media_fragment(7, 96_000, &samples(&data, 960)).unwrap();
        let mut buf = &frag[..];
        let moof = Moof::decode(&mut buf).unwrap();
        let moof_len = frag.len() - buf.len();
        let mdat = Mdat::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfhd.default_sample_duration, Some(960));
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 96_000);
        let trun = &traf.trun[0];
        assert_eq!(trun.data_offset, Some(moof_len as i32 + 8));
        assert_eq!(trun.samples.len(), 50);
        let mut at = trun.data_offset.unwrap() as usize;
        for (entry, packet) in trun.samples.iter().zip(&data) {
            let size = entry.size.unwrap() as usize;
            assert_eq!(&frag[at..at + size], &packet[..]);
            at += size;
        }
        assert_eq!(at, frag.len());
        assert_eq!(mdat.data.len(), 150);
    }

    #[test]
    fn mixed_durations_are_written_per_sample() {
        let data = packets(3);
        let mut run = samples(&data, 960);
        run[1].duration = 2880;
        let frag = media_fragment(1, 0, &run).unwrap();
        let moof = Moof::decode(&mut &frag[..]).unwrap();
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.default_sample_duration, None);
        let TrunSamples::Explicit(entries) = &traf.trun[0].samples else {
            panic!("expected explicit samples");
        };
        let durations: Vec<Option<u32>> = entries.iter().map(|e| e.duration).collect();
        assert_eq!(durations, vec![Some(960), Some(2880), Some(960)]);
    }

    #[test]
    fn same_samples_same_bytes() {
        let a = media_fragment(3, 48_000, &samples(&packets(20), 960)).unwrap();
        let b = media_fragment(3, 48_000, &samples(&packets(20), 960)).unwrap();
        assert_eq!(a, b);
        let config = AudioConfig::PROGRAM_OPUS;
        assert_eq!(
            init_segment(&config).unwrap(),
            init_segment(&config).unwrap()
        );
    }

    #[test]
    fn empty_and_zero_duration_runs_are_errors() {
        assert!(matches!(
            media_fragment(1, 0, &[]),
            Err(Fmp4Error::NoSamples)
        ));
        let data = packets(2);
        let mut run = samples(&data, 960);
        run[1].duration = 0;
        assert!(matches!(
            media_fragment(1, 0, &run),
            Err(Fmp4Error::ZeroDuration(1))
        ));
    }
}
