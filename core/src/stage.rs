//! Who is on stage: the host, co-hosts and speakers with a microphone, and
//! the queue of listeners asking to speak. Plain state; the server turns
//! HTTP calls and WebRTC sessions into these operations.

use crate::admission::{subnet_of, Subnet};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// At most this many people on stage at once (host and co-hosts included).
pub const MAX_ON_STAGE: usize = 13;
/// Pending requests beyond this are refused: the host cannot read more.
pub const MAX_PENDING_REQUESTS: usize = 500;
/// Pending requests one address may hold (a shared address is a few people).
pub const MAX_PENDING_PER_IP: usize = 3;
/// Pending requests one network (/24, /64) may hold.
pub const MAX_PENDING_PER_SUBNET: usize = 20;
/// A pending request whose asker has not checked on it for this long is
/// dropped: they left (the page checks every few seconds).
pub const REQUEST_IDLE_MS: u64 = 120_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageRole {
    Host,
    Cohost,
    Speaker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MutedBy {
    #[serde(rename = "self")]
    Themself,
    Host,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub identity: String,
    pub name: String,
    pub role: StageRole,
    pub muted: bool,
    pub muted_by: Option<MutedBy>,
    /// Media is flowing (ICE and DTLS are up), not only negotiated.
    pub connected: bool,
    /// Loudness of what they sent recently, 0.0..=1.0.
    pub level: f32,
    #[serde(skip)]
    pub session: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Approved,
    Declined,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub id: String,
    pub name: String,
    pub at: u64,
    #[serde(skip)]
    pub state: RequestState,
    /// Where the request came from, for the per-address limits.
    #[serde(skip)]
    pub from: IpAddr,
    /// When its asker last checked on it.
    #[serde(skip)]
    pub seen: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StageError {
    #[error(
        "the stage is full ({MAX_ON_STAGE} people with a microphone); someone must leave first"
    )]
    Full,
    #[error("the host moved {0:?} to the audience; ask to speak again")]
    Removed(String),
    #[error("{0:?} is not on stage")]
    NotOnStage(String),
    #[error("no request {0:?}")]
    UnknownRequest(String),
    #[error("waiting for the host")]
    Pending,
    #[error("the host declined your request")]
    Declined,
    #[error("too many requests are waiting; try again later")]
    QueueFull,
    #[error("requests from your network are already waiting for the host")]
    TooManyFromYou,
    #[error("the host is not taking requests to speak right now")]
    Closed,
    #[error("a name must be 1 to 60 characters")]
    BadName,
    #[error("only the host can unmute someone the host muted")]
    MutedByHost,
}

#[derive(Debug, Default)]
pub struct Stage {
    members: Vec<Member>,
    requests: Vec<Request>,
    /// Identities the host sent back to the audience: their tokens no longer
    /// put them on stage.
    removed: Vec<String>,
    /// The host stopped taking requests.
    requests_closed: bool,
    /// Names given to identities (the host's display name).
    names: Vec<(String, String)>,
}

/// Display names are shown to everyone: trimmed, bounded, no control characters.
pub fn clean_name(name: &str) -> Result<String, StageError> {
    // trimmed after the control characters go, or what they hid would stay:
    // "\u{11} Dave" gave " Dave", and "\u{7} \u{7}" a blank name
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 60 {
        return Err(StageError::BadName);
    }
    Ok(name.to_string())
}

impl Stage {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, identity: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.identity == identity)
    }

    /// The name shown for `identity`: a guest's from their request, else
    /// the identity itself (invite tokens name the person).
    pub fn display_name(&self, identity: &str) -> String {
        if let Some((_, name)) = self.names.iter().find(|(i, _)| i == identity) {
            return name.clone();
        }
        identity
            .strip_prefix("guest-")
            .and_then(|rid| self.requests.iter().find(|r| r.id == rid))
            .map_or_else(|| identity.to_string(), |r| r.name.clone())
    }

    /// `identity` is shown as `name` (the host's display name).
    pub fn name(&mut self, identity: &str, name: &str) -> Result<(), StageError> {
        let name = clean_name(name)?;
        self.names.retain(|(i, _)| i != identity);
        self.names.push((identity.to_string(), name));
        Ok(())
    }

    pub fn pending(&self) -> impl Iterator<Item = &Request> {
        self.requests
            .iter()
            .filter(|r| r.state == RequestState::Pending)
    }

    /// A WebRTC session for `identity` was negotiated. The same identity
    /// joining again replaces its earlier session (a page reload), keeping
    /// its mute; returns the session it replaces.
    pub fn join(
        &mut self,
        identity: &str,
        name: &str,
        role: StageRole,
        session: u64,
    ) -> Result<Option<u64>, StageError> {
        if self.removed.iter().any(|r| r == identity) {
            return Err(StageError::Removed(identity.to_string()));
        }
        if let Some(m) = self.members.iter_mut().find(|m| m.identity == identity) {
            let old = std::mem::replace(&mut m.session, session);
            m.connected = false;
            m.role = role;
            return Ok(Some(old));
        }
        if self.members.len() >= MAX_ON_STAGE {
            return Err(StageError::Full);
        }
        self.members.push(Member {
            identity: identity.to_string(),
            name: name.to_string(),
            role,
            muted: false,
            muted_by: None,
            connected: false,
            level: 0.0,
            session,
        });
        Ok(None)
    }

    /// Media started flowing for `session`.
    pub fn connected(&mut self, session: u64) -> bool {
        match self.members.iter_mut().find(|m| m.session == session) {
            Some(m) if !m.connected => {
                m.connected = true;
                true
            }
            _ => false,
        }
    }

    /// The session ended (hung up, timed out or deleted). A newer session of
    /// the same identity is left alone.
    pub fn leave(&mut self, session: u64) -> Option<Member> {
        let i = self.members.iter().position(|m| m.session == session)?;
        Some(self.members.remove(i))
    }

    /// The host sends a member back to the audience.
    pub fn remove(&mut self, identity: &str) -> Result<Member, StageError> {
        let i = self
            .members
            .iter()
            .position(|m| m.identity == identity)
            .ok_or_else(|| StageError::NotOnStage(identity.to_string()))?;
        if !self.removed.iter().any(|r| r == identity) {
            self.removed.push(identity.to_string());
        }
        Ok(self.members.remove(i))
    }

    /// Mutes or unmutes; a member cannot lift a mute the host imposed.
    pub fn mute(&mut self, identity: &str, muted: bool, by: MutedBy) -> Result<u64, StageError> {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.identity == identity)
            .ok_or_else(|| StageError::NotOnStage(identity.to_string()))?;
        if !muted && m.muted_by == Some(MutedBy::Host) && by != MutedBy::Host {
            return Err(StageError::MutedByHost);
        }
        m.muted = muted;
        m.muted_by = muted.then_some(by);
        Ok(m.session)
    }

    /// Updates a member's level; true when their talking state flipped.
    pub fn set_level(&mut self, session: u64, level: f32) -> bool {
        match self.members.iter_mut().find(|m| m.session == session) {
            Some(m) => {
                let was = m.level > TALKING;
                m.level = level;
                was != (level > TALKING)
            }
            None => false,
        }
    }

    /// A listener at `from` asks to speak. Limits per address and network
    /// keep one crowd of bots from filling the queue: when it is full, a
    /// request from a network with fewer pending requests than the busiest
    /// one takes the busiest one's newest place.
    pub fn request(
        &mut self,
        id: &str,
        name: &str,
        from: IpAddr,
        now_ms: u64,
    ) -> Result<(), StageError> {
        if self.requests_closed {
            return Err(StageError::Closed);
        }
        let name = clean_name(name)?;
        self.expire(now_ms);
        let net = subnet_of(from);
        let from_ip = self.pending().filter(|r| r.from == from).count();
        let from_net = self.pending_from(net);
        if from_ip >= MAX_PENDING_PER_IP || from_net >= MAX_PENDING_PER_SUBNET {
            return Err(StageError::TooManyFromYou);
        }
        if self.pending().count() >= MAX_PENDING_REQUESTS {
            // counted once: a count per request made each request at a
            // full queue quadratic (found by fuzzing, fuzz/fuzz_targets/stage_json.rs)
            let mut per_net: HashMap<Subnet, usize> = HashMap::new();
            for r in self.pending() {
                *per_net.entry(subnet_of(r.from)).or_default() += 1;
            }
            let busiest = self
                .pending()
                .map(|r| subnet_of(r.from))
                .max_by_key(|n| per_net.get(n).copied().unwrap_or(0))
                .filter(|n| per_net.get(n).copied().unwrap_or(0) > from_net + 1)
                .ok_or(StageError::QueueFull)?;
            let newest = self
                .requests
                .iter()
                .rposition(|r| r.state == RequestState::Pending && subnet_of(r.from) == busiest)
                .ok_or(StageError::QueueFull)?;
            self.requests.remove(newest);
        }
        // answered requests are kept so their askers can learn the answer,
        // but not forever
        if self.requests.len() >= 2 * MAX_PENDING_REQUESTS {
            if let Some(i) = self
                .requests
                .iter()
                .position(|r| r.state != RequestState::Pending)
            {
                self.requests.remove(i);
            }
        }
        self.requests.push(Request {
            id: id.to_string(),
            name,
            at: now_ms,
            state: RequestState::Pending,
            from,
            seen: now_ms,
        });
        Ok(())
    }

    fn pending_from(&self, net: Subnet) -> usize {
        self.pending().filter(|r| subnet_of(r.from) == net).count()
    }

    /// Drops pending requests whose askers stopped checking on them.
    /// Returns how many went.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.requests.len();
        self.requests.retain(|r| {
            r.state != RequestState::Pending || now_ms.saturating_sub(r.seen) < REQUEST_IDLE_MS
        });
        before - self.requests.len()
    }

    /// The asker checked on their request (it stays in the queue).
    pub fn touch(&mut self, id: &str, now_ms: u64) {
        if let Some(r) = self.requests.iter_mut().find(|r| r.id == id) {
            r.seen = r.seen.max(now_ms);
        }
    }

    /// The host declines every pending request at once. Returns how many.
    pub fn decline_all(&mut self) -> usize {
        let mut n = 0;
        for r in self
            .requests
            .iter_mut()
            .filter(|r| r.state == RequestState::Pending)
        {
            r.state = RequestState::Declined;
            n += 1;
        }
        n
    }

    /// The host opens or closes the queue (closing keeps what is pending).
    pub fn set_requests_open(&mut self, open: bool) {
        self.requests_closed = !open;
    }

    pub fn requests_open(&self) -> bool {
        !self.requests_closed
    }

    fn request_mut(&mut self, id: &str) -> Result<&mut Request, StageError> {
        self.requests
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StageError::UnknownRequest(id.to_string()))
    }

    pub fn withdraw(&mut self, id: &str) -> Result<(), StageError> {
        let i = self
            .requests
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| StageError::UnknownRequest(id.to_string()))?;
        self.requests.remove(i);
        Ok(())
    }

    /// The host approves: the requester may now join under the identity
    /// derived from the request, even if that identity was removed before.
    pub fn approve(&mut self, id: &str) -> Result<(), StageError> {
        let identity = request_identity(id);
        self.request_mut(id)?.state = RequestState::Approved;
        self.removed.retain(|r| *r != identity);
        Ok(())
    }

    pub fn decline(&mut self, id: &str) -> Result<(), StageError> {
        self.request_mut(id)?.state = RequestState::Declined;
        Ok(())
    }

    /// The requester asks whether they may speak: the identity and name to
    /// put in their speaker token once approved.
    pub fn claim(&mut self, id: &str) -> Result<(String, String), StageError> {
        let r = self.request_mut(id)?;
        match r.state {
            RequestState::Pending => Err(StageError::Pending),
            RequestState::Declined => Err(StageError::Declined),
            RequestState::Approved => Ok((request_identity(id), r.name.clone())),
        }
    }
}

/// Above this level a member counts as talking.
pub const TALKING: f32 = 0.05;

/// The stage identity of someone who came up through a request.
pub fn request_identity(request_id: &str) -> String {
    format!("guest-{request_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_holds_thirteen_and_a_reload_replaces_the_session() {
        let mut s = Stage::default();
        s.join("host", "Host", StageRole::Host, 1).unwrap();
        for i in 1..MAX_ON_STAGE {
            s.join(&format!("s{i}"), "S", StageRole::Speaker, 10 + i as u64)
                .unwrap();
        }
        assert_eq!(
            s.join("s14", "S", StageRole::Speaker, 99),
            Err(StageError::Full)
        );
        // the host reloading the page is not a 14th person
        assert_eq!(s.join("host", "Host", StageRole::Host, 2), Ok(Some(1)));
        assert_eq!(s.members().len(), MAX_ON_STAGE);
        // the old session ending does not remove the new one
        assert!(s.leave(1).is_none());
        assert!(s.leave(2).is_some());
        assert!(s.join("s14", "S", StageRole::Speaker, 99).is_ok());
    }

    #[test]
    fn connected_is_reported_once() {
        let mut s = Stage::default();
        s.join("a", "A", StageRole::Speaker, 7).unwrap();
        assert!(!s.member("a").unwrap().connected);
        assert!(s.connected(7));
        assert!(!s.connected(7));
        assert!(!s.connected(8));
        assert!(s.member("a").unwrap().connected);
    }

    #[test]
    fn removed_members_cannot_rejoin_with_their_token() {
        let mut s = Stage::default();
        s.join("a", "A", StageRole::Speaker, 7).unwrap();
        assert_eq!(s.remove("a").unwrap().session, 7);
        assert_eq!(
            s.join("a", "A", StageRole::Speaker, 8),
            Err(StageError::Removed("a".into()))
        );
        assert_eq!(s.remove("a"), Err(StageError::NotOnStage("a".into())));
    }

    #[test]
    fn requests_go_pending_then_approved_or_declined() {
        let mut s = Stage::default();
        s.request("r1", "  Linus ", ip(1), 5).unwrap();
        s.request("r2", "Grace", ip(2), 6).unwrap();
        assert_eq!(s.request("r3", "   ", ip(3), 7), Err(StageError::BadName));
        assert_eq!(
            s.pending().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["Linus", "Grace"]
        );
        assert_eq!(s.claim("r1"), Err(StageError::Pending));
        s.approve("r1").unwrap();
        s.decline("r2").unwrap();
        assert_eq!(s.pending().count(), 0);
        assert_eq!(
            s.claim("r1"),
            Ok(("guest-r1".to_string(), "Linus".to_string()))
        );
        assert_eq!(s.display_name("guest-r1"), "Linus");
        assert_eq!(s.display_name("Ada"), "Ada");
        s.name("admin", " Grace Hopper ").unwrap();
        assert_eq!(s.display_name("admin"), "Grace Hopper");
        assert_eq!(s.name("admin", "\u{7}"), Err(StageError::BadName));
        assert_eq!(s.claim("r2"), Err(StageError::Declined));
        assert_eq!(
            s.claim("nope"),
            Err(StageError::UnknownRequest("nope".into()))
        );
        // approval lifts an earlier removal of the same guest
        s.join("guest-r1", "Linus", StageRole::Speaker, 3).unwrap();
        s.remove("guest-r1").unwrap();
        s.request("r1b", "Linus", ip(1), 9).unwrap();
        s.withdraw("r1b").unwrap();
        assert_eq!(
            s.withdraw("r1b"),
            Err(StageError::UnknownRequest("r1b".into()))
        );
        s.approve("r1").unwrap();
        assert!(s.join("guest-r1", "Linus", StageRole::Speaker, 4).is_ok());
    }

    /// One address per request, spread over many networks.
    fn ip(i: usize) -> IpAddr {
        IpAddr::from([10, (i / 250 % 250) as u8, (i % 250) as u8, 1])
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut s = Stage::default();
        for i in 0..MAX_PENDING_REQUESTS {
            s.request(&format!("r{i}"), "x", ip(i), 0).unwrap();
        }
        assert_eq!(
            s.request("more", "x", ip(MAX_PENDING_REQUESTS), 0),
            Err(StageError::QueueFull)
        );
        // answered requests are kept for their askers, up to a bound
        for i in 0..MAX_PENDING_REQUESTS {
            s.decline(&format!("r{i}")).unwrap();
        }
        for i in 0..MAX_PENDING_REQUESTS {
            s.request(&format!("n{i}"), "x", ip(i), 0).unwrap();
            s.decline(&format!("n{i}")).unwrap();
        }
        s.request("last", "x", ip(0), 0).unwrap();
        assert!(s.requests.len() <= 2 * MAX_PENDING_REQUESTS);
        assert_eq!(s.claim("last"), Err(StageError::Pending));
        assert_eq!(s.claim("r0"), Err(StageError::UnknownRequest("r0".into())));
    }

    #[test]
    fn one_address_or_network_cannot_fill_the_queue() {
        let mut s = Stage::default();
        let bot = IpAddr::from([192, 0, 2, 1]);
        for i in 0..MAX_PENDING_PER_IP {
            s.request(&format!("a{i}"), "bot", bot, 0).unwrap();
        }
        assert_eq!(
            s.request("a9", "bot", bot, 0),
            Err(StageError::TooManyFromYou)
        );
        for i in 0..MAX_PENDING_PER_SUBNET - MAX_PENDING_PER_IP {
            let neighbour = IpAddr::from([192, 0, 2, 10 + i as u8]);
            s.request(&format!("b{i}"), "bot", neighbour, 0).unwrap();
        }
        let next_door = IpAddr::from([192, 0, 2, 200]);
        assert_eq!(
            s.request("c", "bot", next_door, 0),
            Err(StageError::TooManyFromYou)
        );
        // someone from another network still gets in
        s.request("real", "Ada", IpAddr::from([198, 51, 100, 7]), 0)
            .unwrap();
        // IPv6 counts per /64
        let v6 = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, n]);
        for n in 0..MAX_PENDING_PER_IP as u16 {
            s.request(&format!("v{n}"), "x", v6(n), 0).unwrap();
        }
    }

    #[test]
    fn a_full_queue_makes_room_from_its_busiest_network() {
        let mut s = Stage::default();
        // a flood fills the queue from 25 networks, 20 each
        for i in 0..MAX_PENDING_REQUESTS {
            let from = IpAddr::from([10, 0, (i / 20) as u8, (i % 20) as u8]);
            s.request(&format!("f{i}"), "bot", from, 0).unwrap();
        }
        assert_eq!(s.pending().count(), MAX_PENDING_REQUESTS);
        // a real listener elsewhere takes the newest place of a flooding network
        s.request("real", "Grace", IpAddr::from([203, 0, 113, 5]), 1)
            .unwrap();
        assert_eq!(s.pending().count(), MAX_PENDING_REQUESTS);
        assert!(s.pending().any(|r| r.id == "real"));
        assert!(!s.pending().any(|r| r.id == "f499"));
        // but a flooding network cannot evict its peers to grow
        let more = IpAddr::from([10, 0, 3, 99]);
        assert_eq!(
            s.request("f-more", "bot", more, 1),
            Err(StageError::TooManyFromYou)
        );
    }

    #[test]
    fn names_are_trimmed_after_control_characters_go() {
        // found by fuzzing (fuzz/fuzz_targets/stage_json.rs): a control
        // character before a space kept the space in the shown name
        assert_eq!(clean_name("\u{11} \"Dave\"}\u{4}"), Ok("\"Dave\"}".into()));
        assert_eq!(clean_name("\u{7} \u{7}"), Err(StageError::BadName));
        assert_eq!(clean_name(" Ada\tLovelace\u{0} "), Ok("AdaLovelace".into()));
        for raw in ["\u{11} x \u{1b}", "\t y\n", "\u{85}z\u{a0}", "é\u{0} "] {
            let once = clean_name(raw).unwrap();
            assert_eq!(once, once.trim());
            assert_eq!(clean_name(&once), Ok(once.clone()), "{raw:?}");
        }
        let mut s = Stage::default();
        assert_eq!(
            s.request("r", "\u{7} \u{7}", ip(1), 0),
            Err(StageError::BadName)
        );
    }

    #[test]
    fn a_full_queue_takes_a_long_flood_from_many_networks() {
        // fuzzing (fuzz/fuzz_targets/stage_json.rs) ran at 5 inputs/s: each
        // request at a full queue counted every network's requests once per
        // request. A flood from ever new networks keeps the queue full,
        // fair, and (now) cheap.
        let mut s = Stage::default();
        for i in 0..MAX_PENDING_REQUESTS {
            let from = IpAddr::from([10, 0, (i / 20) as u8, (i % 20) as u8]);
            s.request(&format!("f{i}"), "bot", from, 0).unwrap();
        }
        for i in 0..600u32 {
            let [_, _, a, b] = i.to_be_bytes();
            let from = IpAddr::from([11, a, b, 1]);
            let _ = s.request(&format!("g{i}"), "bot", from, 1);
            assert_eq!(s.pending().count(), MAX_PENDING_REQUESTS);
        }
        let mut per_net: HashMap<Subnet, usize> = HashMap::new();
        for r in s.pending() {
            *per_net.entry(subnet_of(r.from)).or_default() += 1;
        }
        // each newcomer took a place from the busiest network until every
        // network held one
        assert!(per_net.values().all(|&n| n == 1), "{per_net:?}");
    }

    #[test]
    fn pending_requests_expire_unless_their_askers_check_on_them() {
        let mut s = Stage::default();
        s.request("stays", "A", ip(1), 0).unwrap();
        s.request("goes", "B", ip(2), 0).unwrap();
        s.touch("stays", REQUEST_IDLE_MS - 1);
        assert_eq!(s.expire(REQUEST_IDLE_MS), 1);
        assert_eq!(s.claim("stays"), Err(StageError::Pending));
        assert_eq!(
            s.claim("goes"),
            Err(StageError::UnknownRequest("goes".into()))
        );
        // answered requests do not expire with the idle rule
        s.approve("stays").unwrap();
        assert_eq!(s.expire(10 * REQUEST_IDLE_MS), 0);
    }

    #[test]
    fn the_host_clears_and_closes_the_queue() {
        let mut s = Stage::default();
        for i in 0..5 {
            s.request(&format!("r{i}"), "x", ip(i), 0).unwrap();
        }
        assert_eq!(s.decline_all(), 5);
        assert_eq!(s.pending().count(), 0);
        assert_eq!(s.claim("r3"), Err(StageError::Declined));
        s.set_requests_open(false);
        assert!(!s.requests_open());
        assert_eq!(s.request("late", "x", ip(9), 0), Err(StageError::Closed));
        s.set_requests_open(true);
        s.request("late", "x", ip(9), 0).unwrap();
    }

    #[test]
    fn only_the_host_lifts_a_host_mute() {
        let mut s = Stage::default();
        s.join("a", "A", StageRole::Speaker, 7).unwrap();
        assert_eq!(s.mute("a", true, MutedBy::Host), Ok(7));
        assert_eq!(
            s.mute("a", false, MutedBy::Themself),
            Err(StageError::MutedByHost)
        );
        s.mute("a", false, MutedBy::Host).unwrap();
        s.mute("a", true, MutedBy::Themself).unwrap();
        s.mute("a", false, MutedBy::Themself).unwrap();
        assert!(!s.member("a").unwrap().muted);
        assert_eq!(
            s.mute("b", true, MutedBy::Host),
            Err(StageError::NotOnStage("b".into()))
        );
    }

    #[test]
    fn talking_flips_are_reported() {
        let mut s = Stage::default();
        s.join("a", "A", StageRole::Speaker, 7).unwrap();
        assert!(s.set_level(7, 0.3));
        assert!(!s.set_level(7, 0.4));
        assert!(s.set_level(7, 0.0));
        assert!(!s.set_level(9, 0.5));
    }
}
