//! Just enough of the Redis protocol (RESP2) to set up, check and break test topologies:
//! one command at a time, text arguments, replies read into [`Reply`].

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long connecting to a server on loopback may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a reply may take (`MIGRATE` included: its own timeout is shorter).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply other than an error (errors are returned as [`io::Error`]s).
#[derive(Debug)]
pub(crate) enum Reply {
    /// A simple string, bulk string (lossily decoded as UTF-8) or integer (in decimal).
    Text(String),
    /// A null bulk string or null array.
    Nil,
    /// An array.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a string reply.
    pub(crate) fn text(self) -> io::Result<String> {
        match self {
            Reply::Text(text) => Ok(text),
            other => Err(unexpected("a string", &other)),
        }
    }

    /// The elements of an array reply.
    pub(crate) fn array(self) -> io::Result<Vec<Reply>> {
        match self {
            Reply::Array(elements) => Ok(elements),
            other => Err(unexpected("an array", &other)),
        }
    }
}

/// An error saying that `reply` is not `expected`.
fn unexpected(expected: &str, reply: &Reply) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("expected {expected}, got {reply:?}"),
    )
}

/// A connection to a Redis server (or sentinel) on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to the server on `port`.
    pub(crate) fn open(port: u16) -> io::Result<Connection> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// Sends the command `args` and reads its reply. An error reply is an error, saying
    /// which command got it.
    pub(crate) fn call(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.get_mut().write_all(request.as_bytes())?;
        read_reply(&mut self.stream).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("`{}` on a Redis server: {e}", args.join(" ")),
            )
        })
    }
}

/// Sends the command `args` to the server on `port` over a fresh connection.
pub(crate) fn call(port: u16, args: &[&str]) -> io::Result<Reply> {
    Connection::open(port)?.call(args)
}

/// Sends `args` to the server on `port` over a fresh connection; the reply must be text.
pub(crate) fn call_text(port: u16, args: &[&str]) -> io::Result<String> {
    call(port, args)?.text()
}

/// Sends `args` to the server on `port` over a fresh connection; the reply must be `OK`.
pub(crate) fn call_ok(port: u16, args: &[&str]) -> io::Result<()> {
    match call_text(port, args)?.as_str() {
        "OK" => Ok(()),
        other => Err(io::Error::other(format!(
            "`{}` on a Redis server: {other:?} instead of OK",
            args.join(" ")
        ))),
    }
}

/// The value of `name` in the `name:value` lines of an `INFO`-style text.
pub(crate) fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
}

/// Reads one reply.
fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}")))
    };
    match kind {
        "+" | ":" => Ok(Reply::Text(rest.to_owned())),
        "-" => Err(io::Error::other(rest.to_owned())),
        "$" => match usize::try_from(number()?) {
            Err(_) => Ok(Reply::Nil),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len);
                Ok(Reply::Text(String::from_utf8_lossy(&data).into_owned()))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Ok(Reply::Nil),
            Ok(len) => (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<_>>()
                .map(Reply::Array),
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad reply {line:?}"),
        )),
    }
}

/// One line of a reply, without its CRLF.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}
