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
        let mut cmd = Self::cargo_cmd(args);
        cmd.envs(env.iter().copied());
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

    /// Run a command that must fail, with `must_show` in its output: a
    /// seeded bug the suite must catch.
    pub fn run_must_fail(&mut self, name: &str, mut cmd: Command, must_show: &str) -> Result<(), String> {
        eprintln!("==> {name} (must fail): {}", show(&cmd));
        let t = Instant::now();
        let out = cmd.output().map_err(|e| format!("{name}: cannot start {}: {e}", show(&cmd)))?;
        self.done.push((name.to_string(), t.elapsed().as_secs_f64()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Err(format!("step '{name}': passed, but the seeded bug must make it fail"));
        }
        if !text.contains(must_show) {
            eprintln!("{text}");
            return Err(format!("step '{name}': failed without showing '{must_show}' (a build error?)"));
        }
        let caught = text.lines().find(|l| l.contains(must_show)).unwrap_or_default();
        eprintln!("    caught: {}", caught.trim());
        Ok(())
    }

    pub fn cargo_cmd(args: &[&str]) -> Command {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(args);
        cmd
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
