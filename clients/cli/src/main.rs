//! `mmshare`: the command line for mmshare arrays.
//!
//! Every command talks to `mmshared` (`--socket` or `MMSHARE_SOCKET`, else the default socket),
//! after checking which user it runs as (`--server-uid`; see `commands::connect`).
//! On success it exits 0; on any error it prints one line to stderr and exits non-zero (1, or 2
//! for a malformed command line), never a backtrace. Output meant for programs is available as
//! `--json`.
#![forbid(unsafe_code)]

mod commands;
mod demo;
mod docs;
mod failure;
mod npy;
mod streams;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Shared-memory N-dimensional arrays, from the shell.
#[derive(Debug, Parser)]
#[command(name = "mmshare", version, about, after_help = failure::EXIT_STATUS_HELP)]
pub(crate) struct Cli {
    /// The daemon's socket [default: $MMSHARE_SOCKET, else $XDG_RUNTIME_DIR/mmshare/mmshared.sock,
    /// else /tmp/mmshare-$UID/mmshared.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The uid the daemon must run as; root is always accepted, any other uid is refused
    /// before anything is sent [default: $MMSHARE_SERVER_UID; on the default socket, your own
    /// uid; with --socket, no check]
    #[arg(long, global = true, value_name = "UID")]
    server_uid: Option<u32>,
    /// Seconds to wait for the daemon to accept the connection and to answer each request
    /// (0: no limit) [default: $MMSHARE_TIMEOUT, else 10]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_wait)]
    daemon_timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an array, or with --stream a stream (a ring of frames)
    Create {
        /// Array name ([A-Za-z0-9_.-], not starting with '.')
        name: String,
        /// NumPy dtype (f4, float32, <i8, u1, bool, c8, ...)
        #[arg(long)]
        dtype: String,
        /// Dimensions, e.g. 1080,1920,3 (empty for a 0-d array)
        #[arg(long, allow_hyphen_values = true)]
        shape: String,
        /// Keep it in RAM (tmpfs) instead of the storage directory
        #[arg(long)]
        memory: bool,
        /// Who may open it through mmshared: permission bits, octal [default: 0600]. The file
        /// itself stays 0600 in a 0700 directory: other users map it through the daemon
        #[arg(long)]
        mode: Option<String>,
        /// Memory order: C (row-major) or F (column-major)
        #[arg(long, default_value = "C")]
        order: String,
        /// Succeed (and say "exists") if an array with this name, dtype, shape, order and
        /// backing exists; refuse one that differs
        #[arg(long)]
        exist_ok: bool,
        /// Divide the array along its outermost axis into at most N stripes (2 to 32), each
        /// with its own lock, so that writers of different regions run at once and readers
        /// of a region are not held up by writes elsewhere; 1: one lock [default: one lock
        /// below 1 MiB, else stripes of at least 64 KiB]
        #[arg(long, value_name = "N", conflicts_with = "stream")]
        stripes: Option<u32>,
        /// A sparse file: only the header is allocated now, each write allocates what it
        /// writes (a full disk fails that write); for arrays larger than the free disk
        #[arg(long, conflicts_with = "stream")]
        sparse: bool,
        /// Create a stream: a ring of frames of this dtype and shape (one frame's shape)
        #[arg(long)]
        stream: bool,
        /// With --stream: frames in the ring
        #[arg(long, default_value_t = 8, requires = "stream")]
        slots: u32,
        /// With --stream: subscribers that may be attached at once
        #[arg(long, default_value_t = 16, requires = "stream")]
        max_subscribers: u32,
        /// With --stream: what the publisher does about a lossless subscriber that keeps it
        /// waiting for a slot: block (wait for it), demote:MS (after MS milliseconds make it
        /// lossy: it misses frames, counted) or evict:MS (the same, and its next receive fails)
        #[arg(long, default_value = "block", requires = "stream", value_parser = parse_stall)]
        on_stall: mmshare::StallPolicy,
        /// With --stream: keep the newest N frames for subscribers that join late or resume
        /// (`sub --from oldest`), at most slots - 2
        #[arg(long, value_name = "N", default_value_t = 0, requires = "stream")]
        history: u32,
        /// With --stream: give every frame a header of this dtype (a number, a time, or a
        /// record's field list as NumPy's dtype.descr prints it); `sub -o` saves the headers
        /// beside the frames
        #[arg(long, value_name = "DTYPE", requires = "stream")]
        header: Option<String>,
        /// With --stream: frames vary in length along the first axis (the shape is the
        /// largest frame's); `sub -o` saves their rows back to back and each frame's rows
        #[arg(long, requires = "stream")]
        variable: bool,
        /// With --stream: let N publishers publish at once, each in a ring of its own (1 to
        /// 16); subscribers get the frames of all of them
        #[arg(long, value_name = "N", default_value_t = 1, requires = "stream")]
        max_publishers: u32,
    },
    /// List arrays and streams
    Ls {
        /// Only names starting with this
        prefix: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// After the listing, print each change as the daemon reports it (an object created
        /// or deleted, a stream's subscribers joining or leaving), one line each (a JSON line
        /// with --json), until Ctrl-C
        #[arg(long)]
        watch: bool,
    },
    /// Describe an array or a stream
    Info {
        /// Array name
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete arrays (processes that map them keep working)
    Rm {
        /// Array names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write a .npy file into an array, as one consistent write (streamed)
    Put {
        /// Array name
        name: String,
        /// The .npy file
        file: PathBuf,
        /// Create the array (dtype, shape, order from the file) if it does not exist
        #[arg(long)]
        create: bool,
        /// With --create: keep it in RAM
        #[arg(long)]
        memory: bool,
        /// Seconds to wait for the write side if another writer holds it
        #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
        timeout: f64,
    },
    /// Save a consistent snapshot of an array as a .npy file (streamed)
    Get {
        /// Array name
        name: String,
        /// The .npy file to write
        file: PathBuf,
        /// Save it even if a writer died mid-write (TORN)
        #[arg(long)]
        allow_torn: bool,
        /// Seconds to try for a consistent snapshot while writers hold the array or keep
        /// overwriting it
        #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
        timeout: f64,
        /// Save only rows A to B (exclusive) of the first axis, as A:B (A: or :B leave a side
        /// open); in an array with stripes only their stripes are read and validated
        #[arg(long, value_name = "A:B", value_parser = parse_rows)]
        rows: Option<(Option<u64>, Option<u64>)>,
    },
    /// Call a service: send the request(s) of a .npy file, save the responses as a .npy
    Call {
        /// Service name
        name: String,
        /// The request: a .npy of the service's request dtype and shape, or a stack of
        /// requests along a first axis (answered one after the other)
        request: PathBuf,
        /// Where to save the response(s), in the same stacking (`-`: standard output)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Seconds to wait for a server, for room, and for each response
        #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
        timeout: f64,
    },
    /// Publish the frames of a .npy stack (first axis = frames), or raw frames, into a stream
    Pub {
        /// Stream name
        name: String,
        /// The .npy file: frames along its first axis, each of the stream's dtype and shape;
        /// `-` reads raw frames from standard input (as --raw)
        file: PathBuf,
        /// FILE holds raw frames back to back: each exactly a frame's bytes, in the stream's
        /// dtype, shape and order (what `sub --raw` writes; ffmpeg's `-f rawvideo`)
        #[arg(long)]
        raw: bool,
        /// Frames per second (default: as fast as the ring allows)
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Start over at the first frame after the last, until Ctrl-C
        #[arg(long = "loop")]
        looping: bool,
        /// Before the first frame, wait until N subscribers are attached (so that ones started
        /// alongside miss nothing)
        #[arg(long, value_name = "N")]
        wait_subscribers: Option<usize>,
        /// Seconds to wait for a free slot while a lossless subscriber is a whole ring behind,
        /// before giving up (exit status 5)
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_seconds)]
        timeout: f64,
    },
    /// Receive a stream's frames; report them, or record them into a .npy stack
    Sub {
        /// Stream name
        name: String,
        /// Every frame, in order (the publisher waits for this subscriber); default: lossy
        #[arg(long)]
        lossless: bool,
        /// Where to start: next (the next frame published), oldest (the oldest frame the
        /// stream still has: its history), or a frame number N (frames from N that are gone
        /// are counted as missed) [default: next; with --lossless, 0]
        #[arg(long = "from", value_name = "next|oldest|N", value_parser = parse_start)]
        start: Option<mmshare::StartAt>,
        /// Stop after this many frames (default: at Ctrl-C)
        #[arg(long)]
        count: Option<u64>,
        /// Record the frames into this .npy file (written as they come, not held in RAM); with
        /// --raw, write them back to back instead (`-`: to standard output, for a pipe)
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// With -o: raw frames, each exactly a frame's bytes in the stream's dtype, shape and
        /// order, back to back (what `pub --raw` and ffmpeg's `-f rawvideo` read)
        #[arg(long, requires = "output")]
        raw: bool,
        /// Stop after this many seconds
        #[arg(long, value_parser = parse_seconds)]
        seconds: Option<f64>,
        /// Wait for the stream to exist, up to SECONDS (without a value: until Ctrl-C)
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "86400",
              value_parser = parse_seconds)]
        wait: Option<f64>,
    },
    /// Print every new version of an array (or, for a stream, its rate and subscribers every
    /// second), until Ctrl-C or until it is deleted
    Watch {
        /// Array name
        name: String,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: at Ctrl-C, or when the object is deleted)
        #[arg(long, value_parser = parse_seconds)]
        seconds: Option<f64>,
    },
    /// A live table of every array and stream: update rate, GB/s, writer or publisher,
    /// subscribers and their lag (Ctrl-C to stop)
    Top {
        /// Print one snapshot as JSON (rates over one interval) and exit
        #[arg(long)]
        json: bool,
        /// Seconds between refreshes
        #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
        interval: f64,
    },
    /// Run a pipeline on a stream: a producer process, a lossless and a lossy consumer and a
    /// latest() viewer, with a live line of rates, latencies and misses
    Demo {
        /// How long to run, in seconds (Ctrl-C stops it earlier)
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Frames per second the producer publishes
        #[arg(long, default_value_t = 500.0)]
        fps: f64,
    },
    /// Print a shell completion script for mmshare (or, with --daemon, for mmshared): e.g.
    /// `mmshare completions bash > ~/.local/share/bash-completion/completions/mmshare`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
        /// For the daemon, mmshared, instead
        #[arg(long)]
        daemon: bool,
    },
    /// Write the manual pages (mmshare.1, one per subcommand, and mmshared.1) into DIR:
    /// e.g. `mmshare man ~/.local/share/man/man1`
    Man {
        /// Directory to write them into (created if missing)
        dir: PathBuf,
    },
    /// (internal) the demo's producer process
    #[command(hide = true, name = "__demo-producer")]
    DemoProducer {
        name: String,
        seconds: f64,
        fps: f64,
    },
    /// (internal) a demo consumer process: lossless, lossy or latest
    #[command(hide = true, name = "__demo-consumer")]
    DemoConsumer { name: String, role: String },
}

fn main() -> ExitCode {
    // One line, never a backtrace, even for a bug.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("mmshare: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Bare `mmshare` (or a command missing its subcommand): the help, on stderr, and
            // the usage-error status, so a script that forgot the command does not succeed.
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprint!("{}", e.render());
                return ExitCode::from(2);
            }
            // One line, like every other error; `mmshare --help` has the details.
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            eprintln!(
                "mmshare: {} (see mmshare --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    commands::set_target(commands::Target {
        default_socket: cli.socket.is_none(),
        server_uid: cli.server_uid,
        timeout: cli.daemon_timeout,
    });
    let socket = cli.socket.unwrap_or_else(mmshare::default_socket_path);
    let result = match cli.command {
        Command::Create {
            name,
            dtype,
            shape,
            memory,
            mode,
            order,
            exist_ok,
            stripes,
            sparse,
            stream,
            slots,
            max_subscribers,
            on_stall,
            history,
            header,
            variable,
            max_publishers,
        } => {
            if stream {
                commands::create_stream(
                    &socket,
                    &name,
                    &dtype,
                    &shape,
                    memory,
                    mode.as_deref(),
                    &order,
                    exist_ok,
                    streams::Ring {
                        slots,
                        max_subscribers,
                        on_stall,
                        history,
                        header,
                        variable,
                        max_publishers,
                    },
                )
            } else {
                commands::create(
                    &socket,
                    &name,
                    &dtype,
                    &shape,
                    memory,
                    mode.as_deref(),
                    &order,
                    exist_ok,
                    stripes.unwrap_or(0),
                    sparse,
                )
            }
        }
        Command::Pub {
            name,
            file,
            raw,
            rate,
            looping,
            wait_subscribers,
            timeout,
        } => streams::publish(
            &socket,
            &name,
            &file,
            raw,
            streams::Pace {
                rate,
                looping,
                loan_timeout: Duration::from_secs_f64(timeout),
            },
            wait_subscribers,
        ),
        Command::Sub {
            name,
            lossless,
            start,
            count,
            output,
            raw,
            seconds,
            wait,
        } => streams::subscribe(
            &socket,
            &name,
            {
                let delivery = if lossless {
                    mmshare::Delivery::Lossless
                } else {
                    mmshare::Delivery::Lossy
                };
                let options = mmshare::SubscribeOptions::new(delivery).max_held(1);
                match start {
                    Some(start) => options.start(start),
                    None => options,
                }
            },
            count,
            output.as_deref().map(|path| {
                if raw {
                    streams::Recording::Raw(path)
                } else {
                    streams::Recording::Npy(path)
                }
            }),
            seconds.map(Duration::from_secs_f64),
            wait.map(Duration::from_secs_f64),
        ),
        Command::Ls {
            prefix,
            json,
            watch,
        } => {
            let prefix = prefix.as_deref().unwrap_or("");
            if watch {
                // The watch first: a change between the listing and the watch is not lost.
                streams::watch_changes(&socket, prefix, json, || {
                    commands::ls(&socket, prefix, json)
                })
            } else {
                commands::ls(&socket, prefix, json)
            }
        }
        Command::Info { name, json } => commands::info(&socket, &name, json),
        Command::Rm { names } => commands::rm(&socket, &names),
        Command::Call {
            name,
            request,
            output,
            timeout,
        } => commands::call(
            &socket,
            &name,
            &request,
            &output,
            Duration::from_secs_f64(timeout),
        ),
        Command::Put {
            name,
            file,
            create,
            memory,
            timeout,
        } => commands::put(
            &socket,
            &name,
            &file,
            create,
            memory,
            Duration::from_secs_f64(timeout),
        ),
        Command::Get {
            name,
            file,
            allow_torn,
            timeout,
            rows,
        } => commands::get(
            &socket,
            &name,
            &file,
            allow_torn,
            Duration::from_secs_f64(timeout),
            rows,
        ),
        Command::Watch {
            name,
            json,
            seconds,
        } => commands::watch(&socket, &name, json, seconds.map(Duration::from_secs_f64)),
        Command::Top { json, interval } => top::run(&socket, json, interval),
        Command::Demo { seconds, fps } => {
            demo::run(cli_socket_given(&socket), &socket, seconds, fps)
        }
        Command::DemoProducer { name, seconds, fps } => {
            demo::producer(&socket, &name, seconds, fps)
        }
        Command::DemoConsumer { name, role } => demo::consumer(&socket, &name, &role),
        Command::Completions { shell, daemon } => docs::completions(shell, daemon),
        Command::Man { dir } => docs::man_pages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmshare: {}", e.message);
            ExitCode::from(e.status())
        }
    }
}

/// A duration in seconds for `--timeout`: positive and at most a day.
fn parse_seconds(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && *v <= 86_400.0)
        .ok_or_else(|| format!("{s:?} is not a number of seconds between 0 and 86400"))
}

/// `get --rows A:B`: the first axis' rows from A to B (exclusive); either side may be left
/// open (`A:`, `:B`). Checked against the array's shape once it is known.
fn parse_rows(s: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let bad = || format!("{s:?} is not a range of rows A:B (A: and :B leave a side open)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let side = |t: &str| -> Result<Option<u64>, String> {
        let t = t.trim();
        if t.is_empty() {
            Ok(None)
        } else {
            t.parse().map(Some).map_err(|_| bad())
        }
    };
    Ok((side(a)?, side(b)?))
}

/// Frames per second for `pub --rate`: positive, at most a million.
fn parse_rate(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && *v <= 1e6)
        .ok_or_else(|| format!("{s:?} is not a rate between 0 and 1000000 frames per second"))
}

/// Whether the user chose the socket (then the demo must use it, not start its own daemon).
fn cli_socket_given(_socket: &std::path::Path) -> bool {
    std::env::args().any(|a| a == "--socket" || a.starts_with("--socket="))
        || std::env::var_os(mmshare::SOCKET_ENV).is_some_and(|v| !v.is_empty())
}

/// `--on-stall`: block, demote:MS or evict:MS.
fn parse_start(text: &str) -> Result<mmshare::StartAt, String> {
    match text {
        "next" => Ok(mmshare::StartAt::Next),
        "oldest" => Ok(mmshare::StartAt::Oldest),
        n => n.parse().map(mmshare::StartAt::Frame).map_err(|_| {
            format!("{n:?} is not a start point: give next, oldest or a frame number")
        }),
    }
}

fn parse_stall(text: &str) -> Result<mmshare::StallPolicy, String> {
    let bad = || format!("{text:?} is not block, demote:MS or evict:MS (MS in milliseconds)");
    let (kind, ms) = text.split_once(':').unwrap_or((text, ""));
    let after = || {
        ms.parse::<u32>()
            .map(|ms| std::time::Duration::from_millis(u64::from(ms)))
            .map_err(|_| bad())
    };
    match kind {
        "block" if ms.is_empty() => Ok(mmshare::StallPolicy::Block),
        "demote" => Ok(mmshare::StallPolicy::Demote { after: after()? }),
        "evict" => Ok(mmshare::StallPolicy::Evict { after: after()? }),
        _ => Err(bad()),
    }
}

/// `--daemon-timeout`: a number of seconds, fractions allowed.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds (such as 10 or 0.5)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of the whole command line (a global flag and a
    /// subcommand's flag of the same name, say, which only fails when it is parsed).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `mmshare --help`'s first line names every command there is (it once left out `pub`,
    /// `sub` and `top`).
    #[test]
    fn the_first_line_of_the_help_names_every_command() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let about = cli.get_about().map(ToString::to_string).unwrap_or_default();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                about.contains(&format!(" {},", sub.get_name()))
                    || about.contains(&format!(" {})", sub.get_name()))
                    || about.contains(&format!("({},", sub.get_name())),
                "{} is not in: {about}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn every_subcommand_parses_with_the_global_flags() {
        let parsed = Cli::try_parse_from([
            "mmshare",
            "--daemon-timeout",
            "0.5",
            "get",
            "x",
            "x.npy",
            "--timeout",
            "2",
        ]);
        let cli = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.daemon_timeout,
            Some(std::time::Duration::from_millis(500))
        );
    }
}
