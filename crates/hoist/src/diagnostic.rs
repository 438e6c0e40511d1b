//! Rendering of Dockerfile errors (placeholder until the frontend lands).
