//! The REST API, SSE events, metrics endpoint and (later) the representative's page.
