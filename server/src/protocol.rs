//! Protocol v1 wire types: requests `{id, action, args}`, responses
//! `{id, ok, result}` or `{id, ok: false, error: {code, message, details}}`,
//! and server-pushed events. The same types travel over HTTP and WebSocket.
//! Documented, with every error code, in `docs/protocol.md`.

use axum::http::StatusCode;
use citadel_runtime::rules::ACTION_NAMES;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The protocol version in URLs (`/v1/...`).
pub const PROTOCOL_VERSION: u32 = 1;

/// A request from a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Echoed in the response so clients can match answers to questions.
    #[serde(default)]
    pub id: RequestId,
    /// An action of the title's rules (`build`, `upgrade`, ...), or one of
    /// the session actions `get_state` and `ping`.
    pub action: String,
    /// The action's arguments, e.g. `{"building": "farm", "x": 3, "y": 4}`.
    #[serde(default)]
    pub args: Value,
    /// An idempotency key: a request sent again with the key of one already
    /// answered (a client resending after a lost connection) is answered
    /// from the record of the first and not applied twice.
    #[serde(default)]
    pub key: Option<String>,
}

/// The longest idempotency key: room for a UUID with a prefix, short enough
/// that a player's remembered keys stay a couple of kilobytes.
pub const KEY_BYTES_MAX: usize = 64;

impl Request {
    /// The request's idempotency key, checked: 1 to [`KEY_BYTES_MAX`] of
    /// `A-Z a-z 0-9 _ - . :`.
    pub fn checked_key(&self) -> Result<Option<String>, ApiError> {
        let Some(key) = &self.key else { return Ok(None) };
        let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if key.is_empty() || key.len() > KEY_BYTES_MAX || !key.chars().all(fits) {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("`key` must be 1 to {KEY_BYTES_MAX} of A-Z a-z 0-9 _ - . :"),
            ));
        }
        Ok(Some(key.clone()))
    }
}

/// A request's `id`: any JSON value, kept as the exact text the client
/// sent so that it is echoed exactly (a number beyond a double's
/// precision, `1e2` or `100.0`, comes back as written).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub Box<RawValue>);

impl RequestId {
    /// `null`: a request without an id, or one that could not be read.
    pub fn null() -> RequestId {
        RequestId(RawValue::NULL.to_owned())
    }
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId::null()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &RequestId) -> bool {
        self.0.get() == other.0.get()
    }
}

/// A request's result, serialized once where it is made (a login's is the
/// whole player state: building a `Value` tree of it first cost more than
/// everything else a login does).
pub type Answer = Box<RawValue>;

/// Serializes a result. Results are plain data (strings, numbers, string
/// keyed maps), which always serialize; should one not, the client gets
/// an internal error rather than a malformed answer.
pub fn answer(v: &impl Serialize) -> Result<Answer, ApiError> {
    serde_json::value::to_raw_value(v)
        .map_err(|e| ApiError::new(Code::Internal, format!("serializing the answer: {e}")))
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Over HTTP: what the server pushed to this player since their last
    /// answer (oldest first, at most `PENDING_PUSHES_MAX`), each a [`Push`].
    /// WebSocket clients get pushes as messages of their own instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<Box<RawValue>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Declares [`Code`] and [`SERVER_CODES`] together, so that every code has
/// its wire name, HTTP status and meaning, and the docs list them all.
macro_rules! server_codes {
    ($($variant:ident => $name:literal, $status:literal, $meaning:literal;)*) => {
        /// Errors of the server itself (the rules engine's codes, such as
        /// `insufficient_resources`, pass through as they are).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code { $($variant),* }

        /// Every server error code on the wire, its HTTP status, and its meaning.
        pub const SERVER_CODES: &[(Code, &str, u16, &str)] = &[$((Code::$variant, $name, $status, $meaning)),*];
    };
}

server_codes! {
    BadRequest => "bad_request", 400, "the body is not JSON, or not a request object";
    UnknownAction => "unknown_action", 400, "no action of that name";
    InvalidArgument => "invalid_argument", 400, "the args do not fit the action (missing field, wrong type, a number out of range: details names the arg and its min and max)";
    MessageTooLarge => "message_too_large", 413, "the request is larger than limits.message_bytes_max";
    RequestTimeout => "request_timeout", 408, "the request's body did not arrive within limits.request_body_seconds_max; the connection is closed";
    RateLimited => "rate_limited", 429, "the player sends more than limits.requests_per_second_max";
    SessionQueueFull => "session_queue_full", 429, "more than limits.session_queue_max requests are waiting for this player";
    UnknownTitle => "unknown_title", 404, "no title with that id is served here";
    Unauthorized => "unauthorized", 401, "no session token, or a forged or malformed one (admin API: no admin token, or a wrong one)";
    TokenExpired => "token_expired", 401, "the session token has expired; log in again";
    WrongTitle => "wrong_title", 403, "the session token was issued for another title";
    DevLoginDisabled => "dev_login_disabled", 403, "this server does not accept development logins";
    InvalidPlayer => "invalid_player", 400, "player ids are 1 to 64 of A-Z a-z 0-9 _ -";
    PlayerLocked => "player_locked", 409, "the player is logged in on another server; retry when that session ends or its lock expires (lock_ttl_seconds)";
    PlayerRecovering => "player_recovering", 503, "the player's last server stopped holding actions it acknowledged, in a journal this server cannot read (another machine's); refused until that server runs again or an operator declares its journal lost (docs/operations.md)";
    ServerFull => "server_full", 503, "the server holds limits.sessions_max players in memory";
    ShuttingDown => "shutting_down", 503, "the server is shutting down; reconnect (to another server) shortly";
    NotDurable => "not_durable", 503, "the server could not write the action to its journal, so did not apply it; the server is unhealthy: log in again (on another server). With the journal on JetStream, an action whose record timed out may still be applied when another server takes the player over: retry it with the same `key`, which is answered once";
    DefenderOnline => "defender_online", 409, "raid_start: the defender is playing now (raids hit offline bases only)";
    DefenderUnderAttack => "defender_under_attack", 409, "raid_start: another raid on the defender is running; its lock ends within the title's battle duration plus a grace";
    DefenderShielded => "defender_shielded", 409, "raid_start: the defender lost a raid recently and is shielded; details.until_ms says until when";
    RaidInProgress => "raid_in_progress", 409, "raid_start: this player's previous raid is still running; end it (raid_end) or let it expire";
    UnknownAsset => "unknown_asset", 404, "no image at that path in that version of the title, or the version is no longer held (GET /v1/titles names the current one)";
    UnknownPlayer => "unknown_player", 404, "no player of that id has played this title";
    InboxFull => "inbox_full", 409, "the player's inbox holds as many unclaimed items as it may; they are claimed at the player's next login";
    UnknownRaid => "unknown_raid", 404, "raid_end: no raid of that id was started by this player";
    RaidExpired => "raid_expired", 409, "raid_end: the raid's time (battle duration plus grace) ran out; the defender was left untouched and the result is not taken";
    SpotTaken => "spot_taken", 409, "relocate: another base is on that spot";
    UnknownClan => "unknown_clan", 404, "no clan of that id in this title";
    NotInClan => "not_in_clan", 409, "the player (or the one named) is not in this player's clan";
    AlreadyInClan => "already_in_clan", 409, "the player (or the one named) is in a clan already; leave it first";
    ClanFull => "clan_full", 409, "the clan has as many members as the title's world.clans.capacity";
    ClanNameTaken => "clan_name_taken", 409, "clan_create: a clan of that name (in any case) exists";
    NotPermitted => "not_permitted", 403, "the player's clan role may not do that, or the member acted on is not ranked below them";
    ChatTooFast => "chat_too_fast", 429, "clan_chat_post: more than 5 lines within 10 seconds";
    Banned => "banned", 403, "support banned this player; details.until_ms (null: no end) and details.reason say until when and why";
    LoggedOut => "logged_out", 401, "support ended this player's sessions after this token was issued; log in again";
    Draining => "draining", 503, "this server is being drained and takes no new players; log in on another server";
    UnknownServer => "unknown_server", 404, "admin API: no server of that id ever recorded where its journal is";
    UnknownVersion => "unknown_version", 404, "no kept version of the title has that content version (GET /v1/{title}/data; admin API: also no earlier one to roll back to); GET /v1/titles names the current one";
    BadCredentials => "bad_credentials", 401, "gateway: no such device, or a wrong secret (the same answer for both, in the same time)";
    TooManyLogins => "too_many_logins", 429, "gateway: too many logins from this address, or for this device or account; the Retry-After header says when to try again";
    NoServer => "no_server", 503, "gateway: no live, non-draining game server serves the title now; the Retry-After header says when to try again (a new guest: details.device and details.secret, to retry with)";
    IdentityTaken => "identity_taken", 409, "gateway link: that platform identity is linked to another account already (log in with it instead)";
    LoginMethodDisabled => "login_method_disabled", 403, "gateway: this kind of login (guest, dev, an OpenID Connect issuer) is not configured";
    IdTokenMalformed => "id_token_malformed", 401, "gateway: the ID token is not a JWT (three base64url parts, a JSON header and claims)";
    IdTokenAlgorithm => "id_token_algorithm", 401, "gateway: the ID token is not signed with RS256 or ES256 (`none` and HMAC are refused)";
    IdTokenIssuer => "id_token_issuer", 401, "gateway: the ID token's `iss` is not a configured issuer";
    IdTokenUnknownKey => "id_token_unknown_key", 401, "gateway: the issuer publishes no key with the ID token's `kid`, even after fetching its keys again";
    IdTokenSignature => "id_token_signature", 401, "gateway: the ID token's signature does not verify with the issuer's key";
    IdTokenAudience => "id_token_audience", 401, "gateway: the ID token's `aud` does not name this game";
    IdTokenExpired => "id_token_expired", 401, "gateway: the ID token's `exp` has passed, or its `nbf` has not come (60 s of clock skew allowed)";
    IssuerUnavailable => "issuer_unavailable", 503, "gateway: the issuer's keys could not be fetched; retry shortly";
    UnknownProvider => "unknown_provider", 404, "payments: no payment provider of that name is configured";
    SignatureMalformed => "signature_malformed", 400, "payments: no signature header, or not of the form t=<unix seconds>,v1=<hex>";
    SignatureStale => "signature_stale", 400, "payments: the signature's time is more than 5 minutes from the gateway's";
    SignatureMismatch => "signature_mismatch", 400, "payments: no signature matches a configured secret of the provider";
    UnknownProduct => "unknown_product", 422, "payments: the title sells no product of that id (its store.json `products`)";
    UnknownAccount => "unknown_account", 422, "payments: no account of that id";
    UnknownPayment => "unknown_payment", 404, "payments: a refund or chargeback names a payment never recorded";
    PlayerFileDamaged => "player_file_damaged", 500, "the player's file cannot be read (truncated, corrupted, or of a newer format than this server's); nothing was changed, and the message says what is wrong. Support restores an earlier snapshot (docs/operations.md, Player files)";
    Internal => "internal", 500, "something went wrong on the server; it has been logged";
}

impl Code {
    pub fn as_str(self) -> &'static str {
        SERVER_CODES.iter().find(|(c, ..)| *c == self).map_or("internal", |(_, s, ..)| s)
    }
    pub fn status(self) -> StatusCode {
        let n = SERVER_CODES.iter().find(|(c, ..)| *c == self).map_or(500, |(_, _, n, _)| *n);
        StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    /// What the code means, as documented.
    pub fn meaning(self) -> &'static str {
        SERVER_CODES.iter().find(|(c, ..)| *c == self).map_or("", |(.., m)| m)
    }
}

/// An error answer: a server code or a rules code, with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Boxed: errors travel through `Result`s on hot paths; keep them small.
    pub details: Option<Box<Value>>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code: code.as_str(), status: code.status(), message: message.into(), details: None }
    }

    /// A refusal by the game's rules: the request was processed, so HTTP
    /// 200; except `invalid_argument`, which has one status whoever found
    /// the argument wrong (the server's decoder or the rules): 400.
    pub fn rules(e: citadel_runtime::ActionError) -> ApiError {
        let status = if e.code == citadel_runtime::ErrorCode::InvalidArgument {
            Code::InvalidArgument.status()
        } else {
            StatusCode::OK
        };
        ApiError { code: e.code.as_str(), status, message: e.message, details: None }
    }

    /// The answer to a request sent again with the idempotency key of one
    /// already answered: `{"repeated": {"key", "seq"}}` for one that was
    /// applied, or again the code it was refused with. The first answer's
    /// events went to the first request; `get_state` shows where things are.
    pub fn repeated(answered: &citadel_runtime::state::Answered) -> Result<Answer, ApiError> {
        let Some(code) = &answered.error else {
            return answer(&serde_json::json!({ "repeated": { "key": answered.key, "seq": answered.seq } }));
        };
        let message = format!("this request (key `{}`) was already answered, refused with `{code}`", answered.key);
        if let Some((c, ..)) = SERVER_CODES.iter().find(|(_, name, ..)| name == code) {
            return Err(ApiError::new(*c, message));
        }
        // A refusal by the rules: the same status as when it was first made.
        let rules = serde_json::from_value::<citadel_runtime::ErrorCode>(Value::String(code.clone()));
        Err(match rules {
            Ok(code) => ApiError::rules(citadel_runtime::ActionError { code, message }),
            Err(_) => ApiError::new(Code::Internal, message),
        })
    }

    /// `invalid_player` unless `id` is a valid player id.
    pub fn check_player_id(id: &str) -> Result<(), ApiError> {
        if crate::auth::valid_player_id(id) {
            Ok(())
        } else {
            Err(ApiError::new(Code::InvalidPlayer, Code::InvalidPlayer.meaning()))
        }
    }

    pub fn details(mut self, d: Value) -> ApiError {
        self.details = Some(Box::new(d));
        self
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            details: self.details.as_deref().cloned(),
        }
    }
}

impl Response {
    pub fn ok(id: RequestId, result: Answer) -> Response {
        Response { id, ok: true, result: Some(result), error: None, pushes: Vec::new() }
    }
    pub fn err(id: RequestId, e: &ApiError) -> Response {
        Response { id, ok: false, result: None, error: Some(e.body()), pushes: Vec::new() }
    }
}

/// An error as an HTTP answer, one JSON shape for the game and admin APIs
/// alike (a [`Response`] with `ok: false`); an internal error is logged.
#[derive(Debug)]
pub struct Fail(pub ApiError, pub RequestId);

impl Fail {
    /// An error that answers no numbered request (`"id": null`).
    pub fn new(e: ApiError) -> Fail {
        Fail(e, RequestId::null())
    }
}

impl axum::response::IntoResponse for Fail {
    fn into_response(self) -> axum::response::Response {
        if self.0.code == Code::Internal.as_str() {
            tracing::error!(message = %self.0.message, "internal error");
        }
        (self.0.status, axum::Json(Response::err(self.1, &self.0))).into_response()
    }
}

/// Actions handled by the session rather than the rules engine.
pub const SESSION_ACTIONS: &[&str] = &["get_state", "ping"];

/// Actions on the shared world (raids, the map, top scores, other players);
/// a test checks them against [`WorldCommand`].
pub const WORLD_ACTIONS: &[&str] = &[
    "raid_start",
    "raid_end",
    "relocate",
    "map_near",
    "map_watch",
    "map_unwatch",
    "inbox",
    "top_scores",
    "my_rank",
    "player_info",
    "search_players",
    "set_name",
];

/// Clan actions; a test checks them against [`ClanCommand`].
pub const CLAN_ACTIONS: &[&str] = &[
    "clan_create",
    "clan_info",
    "clan_search",
    "clan_join",
    "clan_leave",
    "clan_accept",
    "clan_invite",
    "clan_kick",
    "clan_promote",
    "clan_demote",
    "clan_edit",
    "clan_disband",
    "clan_chat_post",
    "clan_chat",
    "clan_gift",
];

/// Which top score window a request means: the one running now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    #[default]
    All,
    Week,
    Season,
}

/// Rows a top score or search page has when the client does not say.
fn default_page() -> usize {
    20
}

/// A request on the shared world, decoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorldCommand {
    /// Lock an offline defender and get a snapshot of their base to fight.
    RaidStart { defender: String },
    /// End the battle: with the client's `result`, or, in a title whose
    /// server decides raids (`resolve`), with the `units` sent.
    RaidEnd {
        raid: String,
        #[serde(default)]
        result: Option<citadel_runtime::raid::RaidResult>,
        #[serde(default)]
        units: Option<citadel_runtime::format::Amounts>,
    },
    /// Move the base to another spot of the map.
    Relocate { region: String, x: i32, y: i32 },
    /// Bases near this player's (or near a given spot).
    MapNear {
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        x: Option<i32>,
        #[serde(default)]
        y: Option<i32>,
        #[serde(default = "default_radius")]
        radius: i32,
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// Be told of changes (bases placed, relocated, raids started and
    /// ended) in the square of `radius` spots around this player's base (or
    /// a given spot), until `map_unwatch`, another `map_watch` or the end of
    /// the session. One area per player.
    MapWatch {
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        x: Option<i32>,
        #[serde(default)]
        y: Option<i32>,
        #[serde(default = "default_radius")]
        radius: i32,
    },
    /// Stop watching the map.
    MapUnwatch {},
    /// The player's inbox, newest first (claimed items too, until they expire).
    Inbox {
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// A page of a top score list.
    TopScores {
        stat: String,
        #[serde(default)]
        window: WindowKind,
        #[serde(default)]
        offset: usize,
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// This player's rank, and the players just above and below.
    MyRank {
        stat: String,
        #[serde(default)]
        window: WindowKind,
        #[serde(default)]
        around: usize,
    },
    /// Another player's public profile.
    PlayerInfo { player: String },
    /// Set this player's display name (what searches find).
    SetName { name: String },
    /// Players by name prefix, a page at a time (`after` is the last
    /// `[name, player]` of the previous page).
    SearchPlayers {
        prefix: String,
        #[serde(default)]
        after: Option<(String, String)>,
        #[serde(default = "default_page")]
        limit: usize,
    },
}

/// A clan request, decoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClanCommand {
    /// Found a clan (paying the title's founding cost).
    #[serde(rename = "clan_create")]
    Create {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default = "yes")]
        open: bool,
    },
    /// A clan with its members (and, for those who may answer them, its
    /// requests and invitations); the player's own clan when `clan` is absent.
    #[serde(rename = "clan_info")]
    Info {
        #[serde(default)]
        clan: Option<String>,
    },
    /// Clans by name prefix, a page at a time.
    #[serde(rename = "clan_search")]
    Search {
        prefix: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// Join an open clan or one that invited this player; otherwise ask to join.
    #[serde(rename = "clan_join")]
    Join { clan: String },
    #[serde(rename = "clan_leave")]
    Leave {},
    /// Let in a player who asked to join.
    #[serde(rename = "clan_accept")]
    Accept { player: String },
    #[serde(rename = "clan_invite")]
    Invite { player: String },
    #[serde(rename = "clan_kick")]
    Kick { player: String },
    #[serde(rename = "clan_promote")]
    Promote { player: String },
    #[serde(rename = "clan_demote")]
    Demote { player: String },
    #[serde(rename = "clan_edit")]
    Edit {
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        open: Option<bool>,
    },
    #[serde(rename = "clan_disband")]
    Disband {},
    #[serde(rename = "clan_chat_post")]
    ChatPost { text: String },
    /// Clan chat, newest first, before line `before` when given.
    #[serde(rename = "clan_chat")]
    Chat {
        #[serde(default)]
        before: Option<i64>,
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// Give a member of the player's clan resources, as the title's
    /// `world.clans.gifts` allows: taken now, claimed from the receiver's
    /// inbox.
    #[serde(rename = "clan_gift")]
    Gift { to: String, resources: citadel_runtime::format::Amounts },
}

fn yes() -> bool {
    true
}

/// Spots around a base `map_near` looks when the client does not say.
fn default_radius() -> i32 {
    8
}

/// Widest `map_near` square, in spots each way: wider is a map scrape.
pub const MAP_RADIUS_MAX: i32 = 32;
/// Players shown above and below in `my_rank`, at most.
pub const AROUND_MAX: usize = 10;

/// `invalid_argument` unless `min <= got <= max`, with the range in
/// `details` (numbers out of range are refused, never silently clamped).
fn in_range(action: &str, arg: &str, got: i128, min: i128, max: i128) -> Result<(), ApiError> {
    if (min..=max).contains(&got) {
        return Ok(());
    }
    Err(ApiError::new(Code::InvalidArgument, format!("{action}: `{arg}` is {got}; it must be {min} to {max}"))
        .details(serde_json::json!({ "arg": arg, "min": min, "max": max })))
}

impl WorldCommand {
    fn check_ranges(&self, action: &str) -> Result<(), ApiError> {
        use citadel_store::world::{PAGE_MAX, TOP_OFFSET_MAX};
        let page = |limit: usize| in_range(action, "limit", limit as i128, 1, PAGE_MAX as i128);
        match self {
            WorldCommand::MapNear { radius, limit, .. } => {
                in_range(action, "radius", i128::from(*radius), 0, i128::from(MAP_RADIUS_MAX))?;
                page(*limit)
            }
            WorldCommand::Inbox { limit } => page(*limit),
            WorldCommand::MapWatch { radius, .. } => {
                in_range(action, "radius", i128::from(*radius), 0, i128::from(MAP_RADIUS_MAX))
            }
            WorldCommand::TopScores { offset, limit, .. } => {
                in_range(action, "offset", *offset as i128, 0, TOP_OFFSET_MAX as i128)?;
                page(*limit)
            }
            WorldCommand::MyRank { around, .. } => in_range(action, "around", *around as i128, 0, AROUND_MAX as i128),
            WorldCommand::SearchPlayers { limit, .. } => page(*limit),
            _ => Ok(()),
        }
    }
}

impl ClanCommand {
    fn check_ranges(&self, action: &str) -> Result<(), ApiError> {
        match self {
            ClanCommand::Search { limit, .. } | ClanCommand::Chat { limit, .. } => {
                in_range(action, "limit", *limit as i128, 1, citadel_store::world::PAGE_MAX as i128)
            }
            _ => Ok(()),
        }
    }
}

/// What a request asks the session to do, once decoded.
#[derive(Debug, Clone)]
pub enum Command {
    Rules(citadel_runtime::Action),
    GetState,
    Ping,
    World(WorldCommand),
    Clan(ClanCommand),
}

/// Decodes a request's action and args into a [`Command`].
pub fn decode(req: &Request) -> Result<Command, ApiError> {
    match req.action.as_str() {
        "get_state" => return Ok(Command::GetState),
        "ping" => return Ok(Command::Ping),
        name if ACTION_NAMES.contains(&name) || WORLD_ACTIONS.contains(&name) || CLAN_ACTIONS.contains(&name) => {}
        other => {
            let all = || ACTION_NAMES.iter().chain(SESSION_ACTIONS).chain(WORLD_ACTIONS).chain(CLAN_ACTIONS).copied();
            let help =
                citadel_runtime::diagnostic::did_you_mean(other, all()).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(ApiError::new(Code::UnknownAction, format!("unknown action `{other}`{help}"))
                .details(serde_json::json!({ "actions": all().collect::<Vec<_>>() })));
        }
    }
    let mut obj = match &req.args {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(ApiError::new(Code::InvalidArgument, "args must be an object")),
    };
    if obj.contains_key("action") {
        return Err(ApiError::new(Code::InvalidArgument, "args must not contain `action`"));
    }
    obj.insert("action".into(), Value::String(req.action.clone()));
    let bad = |e: serde_json::Error| ApiError::new(Code::InvalidArgument, format!("{}: {e}", req.action));
    if WORLD_ACTIONS.contains(&req.action.as_str()) {
        let cmd: WorldCommand = serde_json::from_value(Value::Object(obj)).map_err(bad)?;
        cmd.check_ranges(&req.action)?;
        return Ok(Command::World(cmd));
    }
    if CLAN_ACTIONS.contains(&req.action.as_str()) {
        let cmd: ClanCommand = serde_json::from_value(Value::Object(obj)).map_err(bad)?;
        cmd.check_ranges(&req.action)?;
        return Ok(Command::Clan(cmd));
    }
    serde_json::from_value(Value::Object(obj)).map(Command::Rules).map_err(bad)
}

/// Messages the server sends without a request: on a WebSocket as they
/// happen, to an HTTP client in its next answer's `pushes`. They carry
/// `event` and never `id`, so a client never takes one for an answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Push {
    /// Sent once after the WebSocket opens.
    Welcome { player: String, title: String, content_version: String },
    /// The server is going away; reconnect after the delay.
    ServerShutdown { reconnect_after_ms: u64 },
    /// A message from the game's operators to every player on the server.
    Notice { text: String },
    /// An administrator ended the player's sessions; the socket closes
    /// (code 4001) and the player must log in again.
    LoggedOut { reason: String },
    /// Timers of the player's base ended (a building, research, training,
    /// a job, a modifier, a script's timer): the rules' events, as an
    /// action's answer has them, at the moment the last of them ended. No
    /// request was needed; `get_state` shows the new state.
    GameEvents { events: Vec<Value>, at_ms: i64 },
    /// A line of the player's clan chat, from a member on any server.
    Chat { clan: String, seq: i64, player: String, text: String, at_ms: i64 },
    /// The player's clan changed (or a clan changed something about the
    /// player): `change` is `joined`, `asked` (a request to join), `invited`,
    /// `left`, `kicked`, `role` (promoted or demoted to `role`), `edited` or
    /// `disbanded`; `player` is whom it is about, `by` who did it.
    Clan {
        clan: String,
        change: String,
        player: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An item arrived in the player's inbox and was applied (a raid
    /// report, a gift, a purchase, a support grant): the item as `inbox`
    /// lists it.
    Inbox { item: Value },
    /// A change in the map area the player watches (`map_watch`): `change`
    /// is `placed` (a new base), `relocated` (`from` is where it was),
    /// `raid_started` or `raid_ended` (on the base at `at`).
    Map {
        change: String,
        player: String,
        at: citadel_store::world::Position,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<citadel_store::world::Position>,
    },
}
