//! How a command fails: one line on stderr, and an exit status that says which kind of failure
//! it was, so that a script can tell "not there" from "not allowed" from "try again later".

use mmshare::{
    ClientError, DTypeError, ErrorKind, OpenError, ReadError, ShapeError, StreamError, WriteError,
};

/// The kinds of failure, each with its exit status (listed in `mmshare --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Anything else: I/O, a protocol or internal error, a torn array.
    Other = 1,
    /// The command line, or a value or file given to it, is not valid.
    BadInput = 2,
    /// No such array, stream or file.
    NotFound = 3,
    /// Not allowed: the object's mode, a read-only handle, a file's permissions, or a daemon
    /// running as another user than the one required.
    Permission = 4,
    /// The daemon, a writer or a publisher did not answer or progress in time.
    Timeout = 5,
    /// In use: a publisher is attached already, the daemon has no connection or descriptor to
    /// spare; trying again later may work.
    Busy = 6,
    /// A limit is reached: the daemon's or the user's quota, or the disk or memory is full.
    Limit = 7,
    /// No daemon answers at the socket.
    Unavailable = 8,
    /// The name is taken (create without --exist-ok, or with a different shape).
    Exists = 9,
}

/// The exit statuses, for `mmshare --help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    any other failure (I/O, protocol, internal; a torn array)
  2    bad command line, or a value or file given to it that is not valid
  3    no such array, stream or file
  4    permission denied (by the object's mode, a file's, or the daemon's uid check)
  5    timed out (the daemon, a writer or a publisher did not answer or progress in time)
  6    busy (a publisher is attached already; the daemon is out of connections or descriptors)
  7    a limit is reached (quota, or no space)
  8    no daemon answers at the socket
  9    the name is taken
  130  interrupted (Ctrl-C)";

/// A failed command: its class and the line to print.
#[derive(Debug)]
pub struct Failure {
    pub class: Class,
    pub message: String,
}

impl Failure {
    pub fn new(class: Class, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
        }
    }

    /// A value or file given to the command that is not valid.
    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure::new(Class::BadInput, message)
    }

    /// The exit status.
    pub fn status(&self) -> u8 {
        self.class as u8
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(Class::Other, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(Class::Other, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::new(client_class(&e), e.to_string())
    }
}

impl From<mmshare::ServiceError> for Failure {
    fn from(e: mmshare::ServiceError) -> Failure {
        use mmshare::ServiceError as E;
        match e {
            E::Client(c) => c.into(),
            E::Stream(s) => s.into(),
            e @ (E::Timeout { .. } | E::NoServer { .. }) => {
                Failure::new(Class::Timeout, e.to_string())
            }
            e @ E::Full { .. } => Failure::new(Class::Busy, e.to_string()),
            e @ E::WrongLength { .. } => Failure::bad_input(e.to_string()),
            other => Failure::new(Class::Other, other.to_string()),
        }
    }
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Failure {
        Failure::new(stream_class(&e), e.to_string())
    }
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        Failure::new(read_class(&e), e.to_string())
    }
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        Failure::new(write_class(&e), e.to_string())
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Failure {
        Failure::new(Class::Other, e.to_string())
    }
}

impl From<DTypeError> for Failure {
    fn from(e: DTypeError) -> Failure {
        Failure::bad_input(e.to_string())
    }
}

impl From<ShapeError> for Failure {
    fn from(e: ShapeError) -> Failure {
        Failure::bad_input(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(io_class(&e), e.to_string())
    }
}

/// The class of a file operation's failure.
pub fn io_class(e: &std::io::Error) -> Class {
    match e.kind() {
        std::io::ErrorKind::NotFound => Class::NotFound,
        std::io::ErrorKind::PermissionDenied => Class::Permission,
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Class::Limit,
        _ => Class::Other,
    }
}

/// The class of a daemon's answer.
pub fn kind_class(kind: ErrorKind) -> Class {
    match kind {
        ErrorKind::NotFound => Class::NotFound,
        ErrorKind::AlreadyExists => Class::Exists,
        ErrorKind::InvalidName
        | ErrorKind::InvalidDtype
        | ErrorKind::InvalidShape
        | ErrorKind::WrongKind => Class::BadInput,
        ErrorKind::PermissionDenied => Class::Permission,
        ErrorKind::QuotaExceeded | ErrorKind::NoSpace => Class::Limit,
        ErrorKind::Busy => Class::Busy,
        ErrorKind::Timeout => Class::Timeout,
        _ => Class::Other,
    }
}

/// The class of a client's failure.
pub fn client_class(e: &ClientError) -> Class {
    match e {
        ClientError::Server { kind, .. } => kind_class(*kind),
        ClientError::Connect { .. } => Class::Unavailable,
        ClientError::WrongServer { .. } => Class::Permission,
        ClientError::BadServerUid { .. } | ClientError::BadTimeout { .. } => Class::BadInput,
        ClientError::Timeout { .. } => Class::Timeout,
        ClientError::OutOfDescriptors { .. } => Class::Busy,
        ClientError::Stream(s) => stream_class(s),
        _ => Class::Other,
    }
}

/// The class of a stream operation's failure.
pub fn stream_class(e: &StreamError) -> Class {
    match e {
        StreamError::LoanTimeout { .. }
        | StreamError::ReceiveTimeout { .. }
        | StreamError::SubscribersTimeout { .. } => Class::Timeout,
        StreamError::LengthMismatch { .. }
        | StreamError::BadMaxHeld { .. }
        | StreamError::BadStart { .. }
        | StreamError::WrongKind { .. } => Class::BadInput,
        StreamError::PublisherBusy { .. } | StreamError::PublishersFull { .. } => Class::Busy,
        StreamError::NoRecord { .. } | StreamError::NoHoldBudget { .. } => Class::Limit,
        _ => Class::Other,
    }
}

/// The class of an array read's failure.
pub fn read_class(e: &ReadError) -> Class {
    match e {
        ReadError::Timeout { .. } => Class::Timeout,
        _ => Class::Other,
    }
}

/// The class of an array write's failure.
pub fn write_class(e: &WriteError) -> Class {
    match e {
        WriteError::Timeout { .. } => Class::Timeout,
        WriteError::ReadOnly => Class::Permission,
        _ => Class::Other,
    }
}
