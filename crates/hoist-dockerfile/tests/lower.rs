//! Lowering: the stage graph, --target pruning, ARG/ENV scoping, platform
//! args and resolved RUN/COPY values.

use std::collections::BTreeMap;

use hoist_dockerfile::lower::{BaseImage, BaseImages, LowerOptions, lower};
use hoist_dockerfile::{Error, ErrorKind};
use hoist_plan::{Base, Exec, Meta, MountKind, Op, Plan, Platform, SourceRef};

fn amd64() -> Platform {
    Platform::new("linux", "amd64")
}

fn plan(text: &str) -> Plan {
    lower(text, &LowerOptions::new(amd64())).unwrap().plan
}

fn plan_with<'a>(text: &str, configure: impl FnOnce(&mut LowerOptions<'a>)) -> Result<Plan, Error> {
    let mut options = LowerOptions::new(amd64());
    configure(&mut options);
    lower(text, &options).map(|lowered| lowered.plan)
}

fn execs(plan: &Plan) -> Vec<&Exec> {
    plan.target_stage()
        .steps
        .iter()
        .filter_map(|step| match &step.op {
            Op::Exec(exec) => Some(exec),
            _ => None,
        })
        .collect()
}

fn env_of<'a>(exec: &'a Exec, name: &str) -> Option<&'a str> {
    exec.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn unused_stages_are_pruned_and_dependencies_ordered() {
    let plan = plan(
        "FROM alpine AS build\nRUN make\n\
         FROM busybox AS unused\nRUN true\n\
         FROM scratch\nCOPY --from=build /out /out\n",
    );
    let names: Vec<_> = plan.stages.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, [Some("build".to_owned()), None]);
    assert_eq!(plan.target, 1);
    let last = plan.target_stage();
    assert_eq!(last.base, Base::Scratch);
    assert_eq!(last.dependencies, [0]);
    let Op::Copy(copy) = &last.steps[0].op else {
        panic!()
    };
    assert_eq!(copy.from, SourceRef::Stage(0));
    assert_eq!(copy.history, "COPY /out /out # buildkit");
}

#[test]
fn target_selects_a_stage_and_prunes_later_ones() {
    let text = "FROM alpine AS base\nFROM base AS build\nRUN make\nFROM scratch AS final\n";
    let plan = plan_with(text, |o| o.target = Some("Build".to_owned())).unwrap();
    assert_eq!(plan.stages.len(), 2);
    assert_eq!(plan.target_stage().base, Base::Stage(0));
    let error = plan_with(text, |o| o.target = Some("buidl".to_owned())).unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::UnknownTarget("buidl".to_owned()));
    assert_eq!(error.hint(), Some("did you mean build?"));
}

#[test]
fn stage_refs_by_index_and_forward_references() {
    let plan = plan(
        "FROM alpine\nRUN a\nFROM busybox AS two\nFROM alpine\nCOPY --from=0 /a /a\nRUN --mount=from=two,target=/m true\n",
    );
    assert_eq!(plan.stages.len(), 3);
    assert_eq!(plan.target_stage().dependencies, [0, 1]);
    let forward = plan_with(
        "FROM alpine AS first\nCOPY --from=later / /\nFROM busybox AS later\n",
        |o| {
            o.target = Some("first".to_owned());
        },
    )
    .unwrap();
    assert_eq!(forward.stages.len(), 2);
    assert_eq!(forward.stages[0].name.as_deref(), Some("later"));
}

#[test]
fn cycles_are_errors() {
    let error = plan_with(
        "FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n",
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Cycle(_)));
}

#[test]
fn out_of_range_stage_index_is_an_error() {
    let error = plan_with("FROM alpine\nCOPY --from=3 /a /a\n", |_| {}).unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::UnknownStage("3".to_owned()));
    assert_eq!(error.span().map(|s| s.start), Some(2));
}

#[test]
fn global_args_scope() {
    let text = "ARG VERSION=3.19\nARG OTHER=x\nFROM alpine:$VERSION\nRUN echo $VERSION\nARG VERSION\nRUN echo $VERSION\n";
    let plan = plan(text);
    assert_eq!(
        plan.target_stage().base,
        Base::Image("alpine:3.19".to_owned())
    );
    let runs = execs(&plan);
    assert_eq!(
        env_of(runs[0], "VERSION"),
        None,
        "global ARG is not visible before re-declaration"
    );
    assert_eq!(env_of(runs[1], "VERSION"), Some("3.19"));
    assert_eq!(env_of(runs[1], "OTHER"), None);
    assert_eq!(
        runs[1].history,
        "RUN |1 VERSION=3.19 /bin/sh -c echo $VERSION # buildkit"
    );

    let plan = plan_with(text, |o| {
        o.build_args = vec![("VERSION".to_owned(), Some("3.20".to_owned()))]
    })
    .unwrap();
    assert_eq!(
        plan.target_stage().base,
        Base::Image("alpine:3.20".to_owned())
    );
    assert_eq!(env_of(execs(&plan)[1], "VERSION"), Some("3.20"));
}

#[test]
fn value_less_build_args_come_from_the_environment() {
    let environment: BTreeMap<String, String> = [("TOKEN".to_owned(), "secret".to_owned())].into();
    let plan = plan_with("FROM alpine\nARG TOKEN\nARG MISSING\nRUN x\n", |o| {
        o.build_args = vec![("TOKEN".to_owned(), None), ("MISSING".to_owned(), None)];
        o.environment = &environment;
    })
    .unwrap();
    let run = execs(&plan)[0];
    assert_eq!(env_of(run, "TOKEN"), Some("secret"));
    assert_eq!(env_of(run, "MISSING"), None);
    assert_eq!(
        run.build_args,
        [
            ("TOKEN".to_owned(), "secret".to_owned()),
            ("MISSING".to_owned(), String::new())
        ]
    );
}

#[test]
fn env_overrides_arg_and_is_expanded_per_instruction() {
    let plan = plan(
        "FROM alpine\nARG A=arg\nENV A=env B=$A\nENV abc=hello\nENV abc=bye def=$abc\nRUN x\n",
    );
    let run = execs(&plan)[0];
    assert_eq!(env_of(run, "A"), Some("env"));
    assert_eq!(env_of(run, "B"), Some("arg"));
    assert_eq!(env_of(run, "def"), Some("hello"));
    assert_eq!(run.build_args, [("A".to_owned(), "env".to_owned())]);
}

#[test]
fn platform_args() {
    let text = "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETARCH\nARG BUILDPLATFORM\nRUN echo $TARGETARCH\nFROM alpine\nCOPY --from=build / /\nARG TARGETPLATFORM\nARG TARGETSTAGE\nRUN x\n";
    let plan = plan_with(text, |o| {
        o.target_platform = Some(Platform::new("linux", "arm64").with_variant("v8"))
    })
    .unwrap();
    let build = &plan.stages[0];
    assert_eq!(build.platform, amd64());
    assert_eq!(plan.target_stage().platform.to_string(), "linux/arm64/v8");
    let Op::Exec(run) = &plan.stages[0].steps[2].op else {
        panic!()
    };
    assert_eq!(env_of(run, "TARGETARCH"), Some("arm64"));
    assert_eq!(env_of(run, "BUILDPLATFORM"), Some("linux/amd64"));
    let run = execs(&plan)[0];
    assert_eq!(env_of(run, "TARGETPLATFORM"), Some("linux/arm64/v8"));
    assert_eq!(env_of(run, "TARGETSTAGE"), Some("default"));
}

#[test]
fn stages_inherit_env_args_and_workdir() {
    let plan = plan(
        "FROM alpine AS base\nARG X=1\nENV Y=2\nWORKDIR /app\nFROM base\nWORKDIR sub\nRUN x\nCOPY a b\n",
    );
    let run = execs(&plan)[0];
    assert_eq!(env_of(run, "X"), Some("1"));
    assert_eq!(env_of(run, "Y"), Some("2"));
    assert_eq!(run.workdir, "/app/sub");
    let Op::Copy(copy) = &plan.target_stage().steps[2].op else {
        panic!()
    };
    assert_eq!(copy.dest, "/app/sub/b");
}

#[test]
fn proxy_args_reach_run_without_history() {
    let plan = plan_with("FROM alpine\nRUN x\n", |o| {
        o.build_args = vec![("HTTP_PROXY".to_owned(), Some("http://p".to_owned()))];
    })
    .unwrap();
    let run = execs(&plan)[0];
    assert_eq!(
        run.proxy_env,
        [("HTTP_PROXY".to_owned(), "http://p".to_owned())]
    );
    assert_eq!(run.history, "RUN /bin/sh -c x # buildkit");
}

#[test]
fn run_forms_and_heredocs() {
    let plan = plan(
        "FROM alpine\nRUN [\"echo\", \"a\"]\nRUN <<EOF\necho hi\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat <<A > /f\nbody\nA\nSHELL [\"/bin/bash\", \"-c\"]\nRUN x\n",
    );
    let runs = execs(&plan);
    assert_eq!(runs[0].argv, ["echo", "a"]);
    assert!(!runs[0].shell_form);
    assert_eq!(runs[1].argv, ["/bin/sh", "-c", "echo hi\n"]);
    assert_eq!(runs[2].argv, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(
        runs[2].inline_files[0].content,
        "#!/usr/bin/env python3\nprint(1)\n"
    );
    assert_eq!(runs[3].argv, ["/bin/sh", "-c", "cat <<A > /f\nbody\nA"]);
    assert_eq!(runs[4].argv, ["/bin/bash", "-c", "x"]);
}

#[test]
fn run_mounts_resolved() {
    let plan = plan(
        "FROM alpine AS deps\nFROM alpine\nARG DIR=/cache\nRUN --mount=type=cache,target=$DIR --mount=type=secret,id=tok --mount=type=bind,from=deps,target=/d --mount=type=ssh x\n",
    );
    let run = execs(&plan)[0];
    assert_eq!(run.mounts.len(), 4);
    assert_eq!(run.mounts[0].target, "/cache");
    assert!(
        matches!(&run.mounts[0].kind, MountKind::Cache { id, mode: 0o755, .. } if id == "/cache")
    );
    assert_eq!(run.mounts[1].target, "/run/secrets/tok");
    assert!(matches!(
        &run.mounts[2].kind,
        MountKind::Bind {
            from: SourceRef::Stage(0),
            ..
        }
    ));
    assert_eq!(run.mounts[3].target, "/run/buildkit/ssh_agent.0");
    assert_eq!(plan.target_stage().dependencies, [0]);
}

#[test]
fn copy_values_expanded() {
    let plan = plan(
        "FROM alpine\nARG U=app\nARG M=0755\nCOPY --chown=$U:$U --chmod=$M --exclude=*.md --link <<EOF ./dst/\nuser $U\nEOF\n",
    );
    let Op::Copy(copy) = &plan.target_stage().steps[2].op else {
        panic!()
    };
    assert_eq!(copy.chown.as_deref(), Some("app:app"));
    assert_eq!(copy.chmod, Some(hoist_plan::Chmod::Octal(0o755)));
    assert_eq!(copy.dest, "/dst/");
    assert_eq!(copy.inline[0].content, "user app\n");
    assert!(copy.link);
    assert_eq!(
        copy.history,
        "COPY --chown=app:app --chmod=0755 <<EOF ./dst/ # buildkit"
    );
    let error = plan_with("FROM alpine\nARG M=abc\nCOPY --chmod=$M a b\n", |_| {}).unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Chmod { .. }));
}

#[test]
fn onbuild_triggers_run_in_child_stages() {
    let plan = plan("FROM alpine AS base\nONBUILD RUN echo child\nFROM base\nRUN x\n");
    let runs = execs(&plan);
    assert_eq!(runs[0].argv, ["/bin/sh", "-c", "echo child"]);
    assert_eq!(runs.len(), 2);
}

struct FakeImages;

impl BaseImages for FakeImages {
    fn base_image(&self, reference: &str, _platform: &Platform) -> Option<BaseImage> {
        (reference == "node").then(|| BaseImage {
            env: vec![("PATH".to_owned(), "/node/bin".to_owned())],
            working_dir: Some("/srv".to_owned()),
            onbuild: vec!["RUN npm ci".to_owned()],
            ..BaseImage::default()
        })
    }
}

#[test]
fn base_image_config_feeds_expansion_and_triggers() {
    let plan = plan_with("FROM node\nENV PATH=/x:$PATH\nRUN y\n", |o| {
        o.base_images = &FakeImages
    })
    .unwrap();
    let runs = execs(&plan);
    assert_eq!(runs[0].argv, ["/bin/sh", "-c", "npm ci"]);
    assert_eq!(runs[0].workdir, "/srv");
    assert_eq!(env_of(runs[1], "PATH"), Some("/x:/node/bin"));
    assert!(matches!(
        &plan.target_stage().steps[1].op,
        Op::Meta(Meta::Env(_))
    ));
}

#[test]
fn blank_base_and_bad_platform() {
    let error = plan_with("ARG IMAGE\nFROM $IMAGE\n", |_| {}).unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::BlankBase(_)));
    let error = plan_with("FROM --platform=nope alpine\n", |_| {}).unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Platform(_)));
}
