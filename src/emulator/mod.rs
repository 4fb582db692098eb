//! An in-memory emulator of the Metabase API (`mbprov fake-metabase`).
