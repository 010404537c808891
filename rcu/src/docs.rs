//! Design notes (documentation only, no code).

pub mod backend {
    //! Why [`RcuCell`](crate::RcuCell) is built on `arc-swap` and not on
    //! `crossbeam-epoch`.
    //!
    //! TODO(numbers)
}
