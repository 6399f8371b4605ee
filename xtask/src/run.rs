//! Running steps: each printed before it starts, timed, and summed up.

use std::process::Command;
use std::time::Instant;

#[derive(Default)]
pub struct Steps {
    done: Vec<(String, f64)>,
}

impl Steps {
    /// Run `cargo ARGS` with extra environment; fail naming the step.
    pub fn cargo(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(args).envs(env.iter().copied());
        self.run(name, cmd)
    }

    pub fn run(&mut self, name: &str, mut cmd: Command) -> Result<(), String> {
        eprintln!("==> {name}: {}", show(&cmd));
        let t = Instant::now();
        let status = cmd.status().map_err(|e| format!("{name}: cannot start {}: {e}", show(&cmd)))?;
        let secs = t.elapsed().as_secs_f64();
        self.done.push((name.to_string(), secs));
        if !status.success() {
            return Err(format!("step '{name}' failed ({status}) after {secs:.1}s: {}", show(&cmd)));
        }
        Ok(())
    }

    pub fn summary(&self) {
        eprintln!("\n{:<68} {:>9}", "step", "seconds");
        for (name, secs) in &self.done {
            eprintln!("{name:<68} {secs:>9.1}");
        }
        let total: f64 = self.done.iter().map(|(_, s)| s).sum();
        eprintln!("{:<68} {total:>9.1}", "total");
    }
}

pub fn show(cmd: &Command) -> String {
    let env: Vec<String> =
        cmd.get_envs().filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy()))).collect();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!(
        "{}{} {}",
        env.iter().map(|e| format!("{e} ")).collect::<String>(),
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    )
}
