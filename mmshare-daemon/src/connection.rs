//! One client connection: receive a bounded request, send a reply with an optional descriptor.
//!
//! SOCK_SEQPACKET keeps message boundaries, so there is no framing code: one `recv` is one
//! request. The receive buffer is one byte larger than the limit, so an oversized message is
//! detected (the kernel truncates it to the buffer) instead of being mistaken for a short one.
//! Descriptors a client attaches to a request are never accepted: `recv` passes no control
//! buffer, so the kernel discards them.

use std::io;
use std::os::fd::AsFd;

use mmshare::internal::proto::{self, MAX_MESSAGE, ProtoError, Request, Response};
use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::AncillaryMessageWriter;

/// What arrived on the socket.
#[derive(Debug)]
pub enum Incoming {
    /// A well-formed request.
    Request(Request),
    /// Bytes that are not a valid request (the client gets a ProtocolError reply).
    Bad(ProtoError),
    /// The client closed the connection.
    Closed,
}

/// A client connection with its receive buffer.
#[derive(Debug)]
pub struct Connection {
    socket: UnixSeqpacket,
    buf: Vec<u8>,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(socket: UnixSeqpacket) -> Self {
        Connection {
            socket,
            buf: vec![0; MAX_MESSAGE + 1],
        }
    }

    /// Wraps a socket that will only be sent to (no receive buffer).
    pub fn new_small(socket: UnixSeqpacket) -> Self {
        Connection {
            socket,
            buf: Vec::new(),
        }
    }

    /// Receives one message.
    ///
    /// # Errors
    /// Socket errors other than an orderly close.
    pub async fn recv(&mut self) -> io::Result<Incoming> {
        let info = match self.socket.recv(&mut self.buf).await {
            Ok(info) => info,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Incoming::Closed),
            Err(e) => return Err(e),
        };
        let len = info.bytes_read();
        if len == 0 && self.peer_closed() {
            return Ok(Incoming::Closed);
        }
        Ok(classify(&self.buf[..len], info.truncated()))
    }

    /// After a 0-byte receive: whether the peer closed (end of stream) rather than sent an
    /// empty message. On a SOCK_SEQPACKET socket both read as 0 bytes; at end of stream every
    /// further receive returns 0 at once, while after an empty message from a live client that
    /// waits for its reply there is nothing to receive (EAGAIN). An empty message decodes to a
    /// ProtocolError reply.
    fn peer_closed(&self) -> bool {
        use rustix::net::{RecvFlags, recv};
        let mut probe = [0u8; 1];
        match recv(
            &self.socket,
            &mut probe,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((0, _)) => true, // end of stream (or a second empty message sent without waiting)
            Ok(_) => false,     // the next message is already queued
            Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
        }
    }

    /// Sends a reply, with `files` attached (SCM_RIGHTS, in order) when there are any.
    ///
    /// # Errors
    /// Socket errors, or a reply that cannot be encoded within the limit.
    pub async fn send(&self, response: &Response, files: &[&std::fs::File]) -> io::Result<()> {
        let bytes = encode_reply(response)?;
        if files.is_empty() {
            self.socket.send(&bytes).await?;
        } else {
            let mut space = [0u8; 128];
            let mut ancillary = AncillaryMessageWriter::new(&mut space);
            ancillary
                .add_fds(files.iter().map(|f| f.as_fd()))
                .map_err(|e| io::Error::other(format!("cannot attach descriptors: {e:?}")))?;
            self.socket
                .send_with_ancillary(&bytes, &mut ancillary)
                .await?;
        }
        Ok(())
    }
}

/// What one received message is: `message` holds the bytes received (at most the receive
/// buffer, `MAX_MESSAGE + 1`), `truncated` says the kernel cut a longer one to fit. Shared by
/// [`Connection::recv`] and the fuzzing harness, so both decode exactly alike.
pub(crate) fn classify(message: &[u8], truncated: bool) -> Incoming {
    if truncated || message.len() > MAX_MESSAGE {
        // The buffer holds one byte more than the limit: all a longer message shows of itself.
        return Incoming::Bad(ProtoError::Oversized);
    }
    match proto::decode::<Request>(message) {
        Ok(req) => Incoming::Request(req),
        Err(e) => Incoming::Bad(e),
    }
}

/// The bytes [`Connection::send`] sends for `response`: its encoding, or, for an error whose
/// message echoes a huge bad value, the error with its message shortened (rather than no
/// reply at all).
///
/// # Errors
/// A reply other than an error that does not fit in `MAX_MESSAGE`.
pub(crate) fn encode_reply(response: &Response) -> io::Result<Vec<u8>> {
    match proto::encode(response) {
        Ok(b) => Ok(b),
        Err(ProtoError::TooLarge { .. }) => {
            let Response::Error { kind, message } = response else {
                return Err(io::Error::other("reply exceeds the message limit"));
            };
            let short: String = message.chars().take(512).collect();
            proto::encode(&Response::Error {
                kind: *kind,
                message: format!("{short}... (truncated)"),
            })
            .map_err(io::Error::other)
        }
        Err(e) => Err(io::Error::other(e)),
    }
}
