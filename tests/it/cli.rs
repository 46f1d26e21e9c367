//! The command line's own helpers: shell completions and the man page, generated from the same
//! definitions the parser uses.

fn countersign(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_and_the_man_page_know_every_command() {
    let bash = countersign(&["completions", "bash"]);
    assert!(bash.contains("_countersign()"), "{bash}");
    for command in ["serve", "approvals", "audit", "policy", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    let zsh = countersign(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef countersign"), "{zsh}");
    let man = countersign(&["man"]);
    assert!(man.contains(".TH countersign 1"), "{man}");
    assert!(man.contains("approvals") && man.contains("audit"), "{man}");
}
