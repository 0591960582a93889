//! Binary upgrades without downtime: a new `citadel` process takes the
//! listening socket over from the running one (docs/operations.md).
//!
//! Every server listens on a Unix socket, `<server_dir>/handoff.sock`. A
//! new process started with `--take-over <that path>`:
//!
//! 1. connects and asks for the listener; the old process sends a copy of
//!    its listening socket's file descriptor (`SCM_RIGHTS`);
//! 2. starts up on it (its own `server_dir`: journal replay, titles) and,
//!    once it accepts connections, says so;
//! 3. the old process then shuts down gracefully, as on SIGTERM: it stops
//!    accepting, finishes in-flight requests, closes WebSockets with 1001,
//!    saves every player and releases their locks, and exits 0.
//!
//! Both processes hold the same socket, so no connection is ever refused
//! or dropped in between: connections waiting in the kernel's queue are
//! accepted by whichever process accepts next (with two listening sockets
//! on one port, `SO_REUSEPORT`, the closing one's queue would be reset).
//! Players whose WebSocket closed reconnect to the new process, whose login
//! waits for the old process to save and release them
//! (`login_lock_wait_seconds`). If the new process fails before it is
//! ready, the old one goes on serving as if nothing happened.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use tokio_util::sync::CancellationToken;

/// What the new process sends first.
const ASK: &[u8] = b"citadel-take-over 1\n";
/// What the new process sends once it accepts connections.
const READY: &[u8] = b"serving\n";
/// The old process's answer with the descriptor attached.
const GIVE: &[u8] = b"listener\n";
/// How long the old process waits for a new one to be ready: long enough
/// to replay a journal and load every title, short enough that a stuck
/// newcomer does not tie up the old process's handoff for good.
const READY_WAIT_MAX: Duration = Duration::from_secs(120);
/// How long either side waits for the other's first message.
const HELLO_WAIT_MAX: Duration = Duration::from_secs(5);

/// Where a server listens for a successor.
pub fn socket_path(server_dir: &Path) -> PathBuf {
    server_dir.join("handoff.sock")
}

/// Reads one line of at most 64 bytes.
fn read_line(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(line)
}

/// The new process's side, before its runtime starts: takes the listening
/// socket from the server at `path`. Returns it and the connection on which
/// to say [`ready`].
pub fn take_over(path: &Path) -> anyhow::Result<(std::net::TcpListener, UnixStream)> {
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("connecting to the running server at {} (is it running?)", path.display()))?;
    stream.set_read_timeout(Some(HELLO_WAIT_MAX))?;
    stream.write_all(ASK)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 64];
    let got = recvmsg(stream.as_fd(), &mut [IoSliceMut::new(&mut buf)], &mut ancillary, RecvFlags::CMSG_CLOEXEC)
        .context("receiving the listening socket")?;
    if &buf[..got.bytes] != GIVE {
        bail!("the running server did not hand over its socket");
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let fd = fds.into_iter().next().context("the running server sent no socket")?;
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok((listener, stream))
}

/// The new process's side, once it accepts connections: tells the old
/// process to drain and exit.
pub fn ready(mut stream: UnixStream) -> anyhow::Result<()> {
    stream.write_all(READY).context("telling the old server to drain")
}

/// The running server's side: answers successors on `path`; when one is
/// ready, cancels `drain` (the graceful shutdown). Once `drain` is
/// cancelled, for whatever reason, no successor is answered.
pub fn serve(path: PathBuf, listener: OwnedFd, drain: CancellationToken) -> anyhow::Result<()> {
    // A leftover from a process that died: this server owns its server_dir.
    let _ = std::fs::remove_file(&path);
    let sock =
        std::os::unix::net::UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    std::thread::Builder::new()
        .name("handoff".into())
        .spawn(move || {
            for conn in sock.incoming() {
                if drain.is_cancelled() {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                match hand_over(&mut conn, &listener) {
                    Ok(()) => {
                        tracing::info!("a new server process took over the listening socket; draining");
                        drain.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "a take-over did not complete; serving on"),
                }
            }
        })
        .context("starting the handoff thread")?;
    Ok(())
}

/// Ends [`serve`]'s thread once `drain` is cancelled: it waits for the
/// next successor, so one that never comes is faked by connecting. The
/// thread then drops its copy of the listening socket, which closes the
/// port (in a process that goes on running, such as the tests, it would
/// otherwise stay open and take connections no one accepts).
pub fn stop(path: &Path) {
    let _ = UnixStream::connect(path);
    let _ = std::fs::remove_file(path);
}

fn hand_over(conn: &mut UnixStream, listener: &OwnedFd) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(HELLO_WAIT_MAX))?;
    if read_line(conn)? != ASK {
        bail!("not a take-over request");
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(conn.as_fd(), &[IoSlice::new(GIVE)], &mut ancillary, SendFlags::empty())
        .context("sending the listening socket")?;
    conn.set_read_timeout(Some(READY_WAIT_MAX))?;
    if read_line(conn)? != READY {
        bail!("the new process went away before it was ready");
    }
    Ok(())
}
