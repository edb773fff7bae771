//! What a peer can make a machine hold, and for how long: caps and deadlines.

/// The caps and deadlines of a machine's migrations. The kernel runs with
/// [`Limits::default`]; the tests shorten or tighten them.
///
/// Every deadline is on silence, never on a migration's total time: a
/// 256 MiB domain takes minutes to migrate under TCG, but its stream never
/// pauses for long. The longest legitimate silence is the target's commit
/// of a large pre-copy round, or its check of every page at the end of the
/// final round, a few seconds under TCG: the deadlines leave ten times that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections peers can make this machine hold at once: those that
    /// have not said what they want yet (and answers being sent), the one
    /// incoming migration, and the question a parked copy asks. At the cap
    /// the machine stops listening, so that no more socket buffers are
    /// taken, and listens again once one closes.
    pub max_connections: usize,
    /// How long a new connection may take to say what it wants, and a
    /// parked copy's source to answer its question.
    pub answer_deadline_ns: u64,
    /// How long the target of a migration waits for the next message, in
    /// any phase, before it gives the migration up.
    pub incoming_silence_ns: u64,
    /// How long the source of a migration waits for the target to take
    /// bytes or to answer, in any phase, before it gives the migration up
    /// (and resumes the domain when it was paused for the final round).
    pub outgoing_silence_ns: u64,
    /// Heap that stays free whatever a migration asks for: the kernel and
    /// its domains need it to go on.
    pub heap_margin_bytes: u64,
    /// Heap one more connection takes: the kernel's TCP buffers (2 x
    /// 128 KiB) and the frame buffer (41 KiB). The machine listens only
    /// while it has this much room past the margin.
    pub connection_heap_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            answer_deadline_ns: 10_000_000_000,
            incoming_silence_ns: 30_000_000_000,
            outgoing_silence_ns: 30_000_000_000,
            heap_margin_bytes: 4 << 20,
            connection_heap_bytes: 320 << 10,
        }
    }
}
