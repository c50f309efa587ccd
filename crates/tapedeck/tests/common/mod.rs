//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Every payload compression a tape's frames may have.
pub const EVERY_COMPRESSION: [tapedeck::tape::Compression; 5] = [
    tapedeck::tape::Compression::None,
    tapedeck::tape::Compression::Lz4,
    tapedeck::tape::Compression::Zstd,
    tapedeck::tape::Compression::CodedZstd,
    tapedeck::tape::Compression::CodedXz,
];

/// A batch from `(name, array)` pairs, all columns nullable.
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

struct CountWarnings(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Runs `f` and returns how many WARN events it emitted (on this thread).
pub fn count_warnings<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let n = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountWarnings(n.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, n.load(Ordering::SeqCst))
}

struct CaptureMessages(Arc<std::sync::Mutex<Vec<String>>>);

struct MessageField<'a>(&'a mut String);

impl tracing::field::Visit for MessageField<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for CaptureMessages {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut MessageField(&mut line));
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }
}

/// Runs `f` and returns every event it logged (on this thread), each as `LEVEL field=value…`.
pub fn capture_events<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(CaptureMessages(lines.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    let lines = lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    (out, lines)
}
