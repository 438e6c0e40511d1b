//! `--change` instructions for `import` (docker's set: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
//! ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR), parsed by the Dockerfile frontend and applied to
//! a container config with the config's own ENV for expansion.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use hoist_dockerfile::instructions::{CommandLine, Instruction, parse_command};
use hoist_dockerfile::shell::{EnvList, Lexer};
use hoist_oci::{ContainerConfig, EmptyObject};

fn argv(cl: CommandLine, shell: Option<&Vec<String>>) -> Vec<String> {
    if cl.shell_form {
        let mut v = shell
            .cloned()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        v.extend(cl.args);
        v
    } else {
        cl.args
    }
}

pub(crate) fn apply(config: &mut ContainerConfig, change: &str) -> Result<()> {
    let file =
        hoist_dockerfile::parse(change).with_context(|| format!("invalid --change {change:?}"))?;
    for node in &file.nodes {
        let name = node.name();
        if !matches!(
            name.to_ascii_lowercase().as_str(),
            "cmd"
                | "entrypoint"
                | "env"
                | "expose"
                | "label"
                | "onbuild"
                | "stopsignal"
                | "user"
                | "volume"
                | "workdir"
        ) {
            bail!(
                "{} is not a valid change command",
                name.to_ascii_uppercase()
            );
        }
        let command =
            parse_command(node).with_context(|| format!("invalid --change {change:?}"))?;
        let env = EnvList::from_entries(config.env.clone().unwrap_or_default());
        let lexer = Lexer::new('\\');
        let expand = |w: &str| {
            lexer
                .expand_word(w, &env)
                .with_context(|| format!("invalid --change {change:?}"))
        };
        match command.instruction {
            Instruction::Cmd(cl) => config.cmd = Some(argv(cl, config.shell.as_ref())),
            Instruction::Entrypoint(cl) => {
                config.entrypoint = Some(argv(cl, config.shell.as_ref()));
                // As in a Dockerfile, a new ENTRYPOINT drops the inherited CMD.
                config.cmd = None;
            }
            Instruction::Env(pairs) => {
                let mut vars = config.env.take().unwrap_or_default();
                for kv in pairs {
                    let (k, v) = (expand(&kv.key)?, expand(&kv.value)?);
                    vars.retain(|e| e.split('=').next() != Some(k.as_str()));
                    vars.push(format!("{k}={v}"));
                }
                config.env = Some(vars);
            }
            Instruction::Label(pairs) => {
                let labels = config.labels.get_or_insert_with(BTreeMap::new);
                for kv in pairs {
                    labels.insert(expand(&kv.key)?, expand(&kv.value)?);
                }
            }
            Instruction::Expose(ports) => {
                let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    let p = expand(&p)?;
                    let p = if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    };
                    exposed.insert(p, EmptyObject {});
                }
            }
            Instruction::Volume(vols) => {
                let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    volumes.insert(expand(&v)?, EmptyObject {});
                }
            }
            Instruction::User(u) => config.user = Some(expand(&u)?),
            Instruction::Workdir(w) => {
                let w = expand(&w)?;
                let base = config.working_dir.clone().unwrap_or_else(|| "/".into());
                config.working_dir = Some(if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", base.trim_end_matches('/'))
                });
            }
            Instruction::StopSignal(s) => config.stop_signal = Some(expand(&s)?),
            Instruction::Onbuild(expr) => config.on_build.get_or_insert_with(Vec::new).push(expr),
            _ => bail!(
                "{} is not a valid change command",
                name.to_ascii_uppercase()
            ),
        }
    }
    Ok(())
}
