//! Unit tests of the Vertex AI provider: settings, endpoints, request bodies.

use super::*;
