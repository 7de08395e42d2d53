//! Pretraining: next-token prediction on the user's text.
