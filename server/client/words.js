// What the server's error codes mean to a player, and how numbers and
// durations read. The server's message adds the particulars (which
// resource, which building); the sentence here says what to do.

const CODES = {
  insufficient_resources: "Not enough resources.",
  requirement_not_met: "Not yet: a requirement is not met.",
  no_free_builder: "Every builder is busy.",
  limit_reached: "You have as many of these as you may for now.",
  max_level: "Already at the highest level.",
  busy: "That is busy right now.",
  not_busy: "Nothing is in progress there.",
  no_speed_up: "This cannot be sped up.",
  out_of_bounds: "That does not fit on the grid.",
  collision: "Something is already there.",
  queue_full: "The training queue is full.",
  housing_full: "Not enough housing for more units.",
  not_available: "Not available right now.",
  already_claimed: "Already claimed.",
  goal_not_met: "Not done yet.",
  nothing_to_collect: "Nothing to collect yet.",
  storage_full: "Storage is full.",
  capacity_short: "Not enough capacity: build more to supply it.",
  script_error: "The game could not do that.",
  unknown_id: "The game does not know that.",
  not_found: "That building is gone.",
  invalid_argument: "That request was not valid.",
  rate_limited: "Too many actions at once: slow down a little.",
  session_queue_full: "Too many actions are waiting.",
  client_busy: "Too many actions are waiting for the server.",
  unauthorized: "Please log in.",
  token_expired: "Your session has expired. Please log in again.",
  logged_out: "Your session was ended. Please log in again.",
  banned: "This account is suspended.",
  draining: "This server is closing for maintenance. Try again in a moment.",
  shutting_down: "The server is restarting. Reconnecting shortly.",
  server_full: "The server is full. Try again in a moment.",
  player_locked: "You are playing somewhere else. Close the other game or wait a minute.",
  player_recovering: "Your base is being recovered after a server fault. Try again shortly.",
  not_durable: "The server could not save that. Please try again.",
  dev_login_disabled: "This server does not accept this login.",
  invalid_player: "Player names are 1 to 64 letters, digits, _ or -.",
  unknown_title: "This game is not served here.",
  defender_online: "That player is online; raids hit offline bases only.",
  defender_under_attack: "Someone else is raiding that base.",
  defender_shielded: "That base is shielded for now.",
  raid_in_progress: "Your previous raid is still running.",
  raid_expired: "The raid's time ran out.",
  implausible_result: "The raid result was refused.",
  spot_taken: "Another base is on that spot.",
  unknown_clan: "No such clan.",
  not_in_clan: "Not in your clan.",
  already_in_clan: "Already in a clan: leave it first.",
  clan_full: "The clan is full.",
  clan_name_taken: "A clan of that name exists.",
  not_permitted: "Your clan role may not do that.",
  chat_too_fast: "Slow down: too many lines at once.",
  unknown_player: "No such player.",
  internal: "Something went wrong on the server.",
};

// A sentence for an error: what it means, then the server's particulars.
export function errorText(e) {
  const code = e && e.code;
  const plain = CODES[code] || "That did not work.";
  let message = e && e.message && e.message !== code ? e.message : "";
  if (code === "banned" && e.details) {
    const until = e.details.until_ms ? ` until ${new Date(e.details.until_ms).toLocaleString()}` : "";
    message = `${e.details.reason || ""}${until}`.trim();
  }
  if (code === "defender_shielded" && e.details && e.details.until_ms) {
    message = `Shielded for ${duration((e.details.until_ms - Date.now()) / 1000)}.`;
  }
  return message ? `${plain} (${message})` : plain;
}

export function number(n) {
  if (n === undefined || n === null) return "0";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "B";
  if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
  return String(n);
}

export function duration(seconds) {
  let s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s}s`;
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return h ? `${d}d ${h}h` : `${d}d`;
  if (h) return m ? `${h}h ${m}m` : `${h}h`;
  return s ? `${m}m ${s}s` : `${m}m`;
}
