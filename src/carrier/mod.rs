//! Third-party call control adapters (`manual` does none).
