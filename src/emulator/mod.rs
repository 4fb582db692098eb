//! An in-memory emulator of the Metabase API (`mbprov fake-metabase`) (placeholder).

#[derive(clap::Args, Debug)]
pub struct EmulatorOptions {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// The API key the emulator accepts in `x-api-key`.
    #[arg(long, env = "MB_EMULATOR_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

pub async fn serve(_opts: EmulatorOptions) -> Result<(), std::io::Error> {
    Ok(())
}
