//! The tracing layer that turns every event into a [`LogRecord`]: its fields merged with those
//! of the spans it happened in, appended to the [`LogBuffer`] and written as one line (JSON or
//! pretty) to each output.
//!
//! Span fields are captured when the span is created and whenever one is recorded later
//! (`Span::current().record("payment_id", ..)`), so a field learnt half-way through a request
//! shows on every later line of it.
//!
//! Fields whose name says they hold a credential (`authorization`, `api_key`, `token`,
//! `secret`, `password`, ...) are written as `"[redacted]"`: a second line of defence, since
//! the services never log credentials in the first place.

use std::{
    fmt::{self, Write as _},
    io::Write,
    sync::{
        mpsc::{Receiver, SyncSender, TryRecvError},
        Arc, Mutex,
    },
};

use chrono::Utc;
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Subscriber,
};
use tracing_subscriber::{layer::Context, registry::LookupSpan, Layer};

use crate::buffer::{FieldValue, Fields, LogBuffer, LogRecord};

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// The record as one JSON object (the shape of a `/v1/logs` record).
    Json,
    /// `timestamp LEVEL service target: message key=value ...`, coloured when `ansi`.
    Pretty {
        /// Colour the level with ANSI escapes.
        ansi: bool,
    },
}

/// Where lines go: a writer and its format.
///
/// [`Output::new`] writes each line on the logging thread, under the output's lock (lines from
/// concurrent threads never interleave). [`Output::background`] hands each record to a writer
/// thread instead, which formats it, writes it through a buffer, and flushes whenever it has
/// caught up: a request never waits for a `write` system call, and a burst of lines becomes one.
/// Its queue is bounded; when it is full the logging thread waits (logs are never dropped).
#[derive(Clone)]
pub struct Output {
    format: LineFormat,
    sink: Arc<Sink>,
}

enum Sink {
    Direct(Mutex<Box<dyn Write + Send>>),
    Background(SyncSender<Message>),
}

enum Message {
    Record(Arc<LogRecord>),
    /// Write out everything queued before this, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Records queued for a background writer before logging threads wait.
pub const BACKGROUND_QUEUE: usize = 16 * 1024;

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Output {
    /// Lines in `format` to `writer`, written on the logging thread.
    pub fn new(format: LineFormat, writer: impl Write + Send + 'static) -> Self {
        Self {
            format,
            sink: Arc::new(Sink::Direct(Mutex::new(Box::new(writer)))),
        }
    }

    /// Lines in `format` to `writer`, written by a dedicated thread.
    pub fn background(format: LineFormat, writer: impl Write + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(BACKGROUND_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || background_writer(format, writer, rx));
        match spawned {
            Ok(_) => Self {
                format,
                sink: Arc::new(Sink::Background(tx)),
            },
            // No thread to be had: write on the logging thread rather than not at all.
            Err(_) => Self::new(format, std::io::stderr()),
        }
    }

    fn write(&self, record: &Arc<LogRecord>) {
        match &*self.sink {
            Sink::Direct(writer) => {
                let line = format_line(self.format, record);
                let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
                // A log line that cannot be written is dropped: logging must never fail a
                // request.
                let _ = writer.write_all(line.as_bytes());
                let _ = writer.flush();
            }
            Sink::Background(tx) => {
                let _ = tx.send(Message::Record(record.clone()));
            }
        }
    }

    /// Waits (at most `timeout`) until every line logged so far is written out.
    pub fn flush(&self, timeout: std::time::Duration) {
        match &*self.sink {
            Sink::Direct(writer) => {
                let _ = writer.lock().unwrap_or_else(|p| p.into_inner()).flush();
            }
            Sink::Background(tx) => {
                let (done, wait) = std::sync::mpsc::channel();
                if tx.send(Message::Flush(done)).is_ok() {
                    let _ = wait.recv_timeout(timeout);
                }
            }
        }
    }
}

fn format_line(format: LineFormat, record: &LogRecord) -> String {
    let mut line = Vec::with_capacity(512);
    write_line(format, record, &mut line);
    String::from_utf8(line).unwrap_or_default()
}

/// Appends `record`'s line, newline included, to `out`.
fn write_line(format: LineFormat, record: &LogRecord, out: &mut Vec<u8>) {
    match format {
        LineFormat::Json => {
            // Into a `Vec` this cannot fail (every field serialises).
            let _ = serde_json::to_writer(&mut *out, record);
        }
        LineFormat::Pretty { ansi } => out.extend_from_slice(pretty(record, ansi).as_bytes()),
    }
    out.push(b'\n');
}

/// How long the writer naps after catching up while lines are still coming: a line may reach
/// its file this much later, and a busy service wakes the writer at most 200 times a second
/// (each wake-up is a timer, a context switch and a `write`; at 1 ms these were ~1% of the
/// API's CPU under load: docs/performance.md). 5 ms of lines is ~50 records at 10 000 a
/// second, far from filling [`BACKGROUND_QUEUE`].
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer thread: drains the queue into a buffer, flushing whenever the queue is empty.
///
/// While lines keep coming it naps [`LINGER`] between drains instead of blocking, so a logging
/// thread's send is a plain queue push, never a wake-up of this thread (a futex call and a
/// context switch per line, on a 2-core machine, cost more than the write it saves). Once a nap
/// ends with nothing queued, it blocks until the next line.
fn background_writer(format: LineFormat, writer: impl Write, queue: Receiver<Message>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    // One line at a time, reused: a line is written whole or not at all.
    let mut line = Vec::with_capacity(1024);
    let mut next = queue.recv().ok();
    while let Some(message) = next {
        match message {
            Message::Record(record) => {
                line.clear();
                write_line(format, &record, &mut line);
                let _ = out.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
        next = match queue.try_recv() {
            Ok(message) => Some(message),
            Err(TryRecvError::Empty) => {
                let _ = out.flush();
                std::thread::sleep(LINGER);
                match queue.try_recv() {
                    Ok(message) => Some(message),
                    Err(TryRecvError::Empty) => queue.recv().ok(),
                    Err(TryRecvError::Disconnected) => None,
                }
            }
            Err(TryRecvError::Disconnected) => None,
        };
    }
    let _ = out.flush();
}

fn pretty(record: &LogRecord, ansi: bool) -> String {
    let level = record.level.as_str();
    let level = if ansi {
        let colour = match record.level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        format!("\x1b[{colour}m{level:>5}\x1b[0m")
    } else {
        format!("{level:>5}")
    };
    let mut line = format!(
        "{} {level} {} {}: {}",
        record.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        record.service,
        record.target,
        record.message
    );
    for (key, value) in record.fields.iter() {
        let _ = write!(line, " {key}={value}");
    }
    line
}

/// The layer: builds a record per event, appends it to the buffer, writes it to the outputs.
#[derive(Debug)]
pub struct TelemetryLayer {
    service: &'static str,
    buffer: Arc<LogBuffer>,
    outputs: Vec<Output>,
}

impl TelemetryLayer {
    /// Records of `service` go to `buffer` and to every output in `outputs`.
    pub fn new(service: &'static str, buffer: Arc<LogBuffer>, outputs: Vec<Output>) -> Self {
        Self {
            service,
            buffer,
            outputs,
        }
    }
}

/// The fields of a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Fields);

/// Collects fields; `message` goes apart.
struct Collector<'a> {
    fields: &'a mut Fields,
    message: Option<&'a mut String>,
}

impl Collector<'_> {
    /// Takes `value` as the message if `field` is the event's message.
    fn message(&mut self, field: &Field, value: impl FnOnce() -> String) -> bool {
        match self.message.as_deref_mut() {
            Some(message) if field.name() == "message" => {
                *message = value();
                true
            }
            _ => false,
        }
    }

    fn put(&mut self, field: &Field, value: FieldValue) {
        if self.message(field, || value.to_string()) {
            return;
        }
        let name = field.name();
        let value = if is_sensitive(name) && !matches!(value, FieldValue::Bool(_)) {
            FieldValue::from("[redacted]")
        } else {
            value
        };
        // `log` records bridged into tracing name their fields `log.target` etc.; keep names.
        self.fields.set(name, value);
    }
}

/// Field names that could hold a credential.
fn is_sensitive(name: &str) -> bool {
    // Checked for every field of every line: compare case-insensitively in place rather than
    // allocating a lower-cased copy.
    let name = name.as_bytes();
    [
        "authorization",
        "api_key",
        "apikey",
        "x-api-key",
        "token",
        "secret",
        "password",
        "cookie",
        "card_number",
        "cvc",
    ]
    .iter()
    .any(|s| {
        name.windows(s.len())
            .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
    })
}

impl Visit for Collector<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, FieldValue::from(value.to_string()));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, FieldValue::from(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.message(field, || value.to_owned()) {
            self.put(field, FieldValue::from(value));
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message (`format_args!`) is written once, straight into the record's `String`.
        if !self.message(field, || format!("{value:?}")) {
            self.put(field, FieldValue::from(format!("{value:?}")));
        }
    }
}

impl<S> Layer<S> for TelemetryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Room for every declared field, those recorded later (`field::Empty`) included.
        let mut fields = SpanFields(Fields::with_capacity(attrs.metadata().fields().len()));
        attrs.record(&mut Collector {
            fields: &mut fields.0,
            message: None,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collector {
                fields: &mut fields.0,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let own = event.metadata().fields().len();
        let mut fields = Fields::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    if fields.is_empty() {
                        // The outermost span's names are unique already: copy them whole
                        // instead of looking each one up, with room for the event's own.
                        fields = Fields::with_capacity(span_fields.0.len() + own);
                        for (k, v) in span_fields.0.iter() {
                            fields.push_unique(k, v.clone());
                        }
                    } else {
                        for (k, v) in span_fields.0.iter() {
                            fields.set(k, v.clone());
                        }
                    }
                }
            }
        }
        let mut message = String::new();
        event.record(&mut Collector {
            fields: &mut fields,
            message: Some(&mut message),
        });
        let metadata = event.metadata();
        let record = self.buffer.push(LogRecord {
            seq: 0,
            timestamp: Utc::now(),
            level: *metadata.level(),
            service: self.service,
            target: metadata.target(),
            message,
            fields,
        });
        for output in &self.outputs {
            output.write(&record);
        }
    }
}
