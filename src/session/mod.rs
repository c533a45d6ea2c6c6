//! The secure session: state machine, DNIS pool, fields and payment hand-off.
