//! The four ways a delivery resumes a sink, one module each, named for what they do; a sink
//! names its way in [`crate::sink::SinkConfig::resume_by`] ([`crate::sink::ResumeBy`]) and
//! [`super::destination::open`] picks the module.

mod cursor_in_transaction;
mod nothing;
mod rebuild_and_rename;
mod truncate_to_cursor;

pub(crate) use cursor_in_transaction::CursorInTransaction;
pub(crate) use nothing::Nothing;
pub(crate) use rebuild_and_rename::RebuildAndRename;
pub(crate) use truncate_to_cursor::TruncateToCursor;
