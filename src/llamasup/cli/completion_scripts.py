"""The bash, zsh and fish completion scripts, written from a :class:`CommandSpec` tree.

bash and zsh share one generated table, ``__llamasup_spec PATH QUESTION``: a ``case`` that
answers which subcommands, options, option values and positional kinds a command has. Each
shell then walks its command line with it. fish gets declarative ``complete`` lines. Models
and agents come from ``llamasup __complete``, with the profile path of ``-f/--file`` when the
command line has one (``render``).
"""

from __future__ import annotations

import shlex

from llamasup.cli.completion_tree import AGENT, ANY, FILE, MODEL, TARGET, CommandSpec


def render(shell: str, tree: CommandSpec, version: str) -> str:
    if shell == "bash":
        return _bash(tree, version)
    if shell == "zsh":
        return _zsh(tree, version)
    if shell == "fish":
        return _fish(tree, version)
    raise ValueError(f"unknown shell {shell!r}; expected bash, zsh or fish")


def _words(words: list[str] | tuple[str, ...]) -> str:
    return shlex.quote(" ".join(words))


def _spec_function(tree: CommandSpec) -> str:
    cases: list[str] = []
    for command in tree.walk():
        name = command.name
        if command.subcommands:
            names = [sub.path[-1] for sub in command.subcommands]
            cases.append(f'        "{name}|commands") echo {_words(names)} ;;')
            described = " ".join(
                shlex.quote(f"{sub.path[-1]}:{sub.help}") for sub in command.subcommands
            )
            cases.append(f"        \"{name}|described\") printf '%s\\n' {described} ;;")
        flags = [flag for option in command.options for flag in option.flags]
        cases.append(f'        "{name}|options") echo {_words(flags)} ;;')
        if command.takes_value():
            cases.append(f'        "{name}|takes") echo {_words(command.takes_value())} ;;')
        for option in command.options:
            if option.value is None:
                continue
            patterns = "|".join(f'"{name}|value {flag}"' for flag in option.flags)
            cases.append(f"        {patterns}) echo {_words(option.value)} ;;")
        for index, kind in enumerate(command.positionals, start=1):
            cases.append(f'        "{name}|positional {index}") echo {_words(kind)} ;;')
    body = "\n".join(cases)
    return f"""__llamasup_spec() {{
    # $1: a command path ("" for llamasup itself, "runtime install"); $2: the question
    case "$1|$2" in
{body}
    esac
}}

__llamasup_names() {{
    # $1: models | agents; $2: the profile path given on the command line, if any
    command llamasup __complete "$1" ${{2:+"$2"}} 2>/dev/null
}}
"""


def _header(shell: str, version: str, load: str, keep: str) -> str:
    return f"""# {shell} completion for llamasup {version}: `llamasup completion {shell}` wrote it.
# Load it in this shell:   {load}
# Load it in every shell:  {keep}
# Commands and options come from llamasup itself; model ids and agents from the profile set
# the command line names (-f PATH), else $LLAMASUP_PROFILES, ./profiles or ./profiles.yaml.
"""


# The walk over the words before the cursor, shared in spirit by bash and zsh: it finds the
# command path, the profile path (-f/--file), how many positionals are filled, and whether
# the cursor is on the value of an option.
_BASH_BODY = r"""
__llamasup_reply() {
    # $1: candidate words; $2: the typed part they must start with; $3: a prefix to put back
    mapfile -t COMPREPLY < <(compgen -P "${3:-}" -W "$1" -- "$2")
}

_llamasup() {
    local line="${COMP_LINE:0:COMP_POINT}"
    local cur="${line##*[[:space:]]}"
    local -a words
    read -r -a words <<< "${line:0:${#line}-${#cur}}"
    local cmdpath="" profile="" pending="" word kind
    local -i npos=0 i=1
    while (( i < ${#words[@]} )); do
        word="${words[i]}"
        if [[ $word == -* ]]; then
            if [[ $word == --file=* ]]; then
                profile="${word#--file=}"
            elif [[ " $(__llamasup_spec "$cmdpath" takes) " == *" $word "* ]]; then
                if (( i + 1 == ${#words[@]} )); then
                    pending="$word"
                elif [[ $word == -f || $word == --file ]]; then
                    profile="${words[i + 1]}"
                fi
                i+=1
            fi
        elif (( npos == 0 )) && [[ " $(__llamasup_spec "$cmdpath" commands) " == *" $word "* ]]
        then
            cmdpath="${cmdpath:+$cmdpath }$word"
        else
            npos+=1
        fi
        i+=1
    done
    COMPREPLY=()
    if [[ -n $pending ]]; then
        kind="$(__llamasup_spec "$cmdpath" "value $pending")"
    elif [[ $cur == -* ]]; then
        kind="$(__llamasup_spec "$cmdpath" options)"
    elif [[ -n "$(__llamasup_spec "$cmdpath" commands)" ]]; then
        kind="$(__llamasup_spec "$cmdpath" commands)"
    else
        kind="$(__llamasup_spec "$cmdpath" "positional $((npos + 1))")"
    fi
    case "$kind" in
        @file)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
        @model) __llamasup_reply "$(__llamasup_names models "$profile")" "$cur" ;;
        @agent) __llamasup_reply "$(__llamasup_names agents "$profile")" "$cur" ;;
        @target)
            if [[ $cur == *@* ]]; then
                __llamasup_reply "$(__llamasup_names agents "$profile")" "${cur#*@}" "${cur%%@*}@"
            else
                __llamasup_reply "$(__llamasup_names models "$profile")" "$cur"
            fi ;;
        @*) ;;
        *) __llamasup_reply "$kind" "$cur" ;;
    esac
    # bash splits words at ':' (COMP_WORDBREAKS): a model id like qwen3:8b is replaced only
    # after its last ':'
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local colon="${cur%"${cur##*:}"}"
        COMPREPLY=("${COMPREPLY[@]#"$colon"}")
    fi
}

complete -F _llamasup llamasup
"""


def _bash(tree: CommandSpec, version: str) -> str:
    header = _header(
        "bash",
        version,
        "source <(llamasup completion bash)",
        "llamasup completion bash > ~/.local/share/bash-completion/completions/llamasup",
    )
    return header + "\n" + _spec_function(tree) + _BASH_BODY


_ZSH_BODY = r"""
_llamasup() {
    # not `path`: in zsh that is $PATH as an array
    local cur="${words[CURRENT]}" cmdpath="" profile="" pending="" word kind
    local -i npos=0 i=2
    local -a described
    while (( i < CURRENT )); do
        word="${words[i]}"
        if [[ $word == -* ]]; then
            if [[ $word == --file=* ]]; then
                profile="${word#--file=}"
            elif [[ " $(__llamasup_spec "$cmdpath" takes) " == *" $word "* ]]; then
                if (( i + 1 == CURRENT )); then
                    pending="$word"
                elif [[ $word == -f || $word == --file ]]; then
                    profile="${words[i + 1]}"
                fi
                (( i++ ))
            fi
        elif (( npos == 0 )) && [[ " $(__llamasup_spec "$cmdpath" commands) " == *" $word "* ]]
        then
            cmdpath="${cmdpath:+$cmdpath }$word"
        else
            (( npos++ ))
        fi
        (( i++ ))
    done
    if [[ -n $pending ]]; then
        kind="$(__llamasup_spec "$cmdpath" "value $pending")"
    elif [[ $cur == -* ]]; then
        compadd -- ${=$(__llamasup_spec "$cmdpath" options)}
        return
    elif [[ -n "$(__llamasup_spec "$cmdpath" commands)" ]]; then
        described=("${(@f)$(__llamasup_spec "$cmdpath" described)}")
        _describe -t commands 'llamasup command' described
        return
    else
        kind="$(__llamasup_spec "$cmdpath" "positional $(( npos + 1 ))")"
    fi
    case "$kind" in
        @file) _files ;;
        @model) compadd -- ${(f)"$(__llamasup_names models "$profile")"} ;;
        @agent) compadd -- ${(f)"$(__llamasup_names agents "$profile")"} ;;
        @target)
            if [[ $cur == *@* ]]; then
                compset -P '*@'
                compadd -- ${(f)"$(__llamasup_names agents "$profile")"}
            else
                compadd -- ${(f)"$(__llamasup_names models "$profile")"}
            fi ;;
        @*) ;;
        *) compadd -- ${=kind} ;;
    esac
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _llamasup "$@"
else
    compdef _llamasup llamasup
fi
"""


def _zsh(tree: CommandSpec, version: str) -> str:
    header = _header(
        "zsh",
        version,
        "source <(llamasup completion zsh)   (after compinit)",
        "llamasup completion zsh > ~/.zfunc/_llamasup   (~/.zfunc on $fpath, before compinit)",
    )
    return "#compdef llamasup\n" + header + "\n" + _spec_function(tree) + _ZSH_BODY


_FISH_FUNCTIONS = r"""
function __llamasup_command --description 'the llamasup (sub)command typed so far'
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l found
    set -l choices (__llamasup_subcommands)
    for token in $tokens
        if string match -q -- '-*' $token
            continue
        end
        contains -- $token $choices; or break
        set -a found $token
        set choices (__llamasup_subcommands $found)
    end
    string join ' ' -- $found
end

function __llamasup_at --description 'is the command typed so far exactly ARGV?'
    set -l current (__llamasup_command)
    test "$current" = "$argv"
end

function __llamasup_profile --description 'the profile path after -f/--file, if any'
    set -l tokens (commandline -opc)
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case -f --file
                set -q tokens[(math $i + 1)]; and echo $tokens[(math $i + 1)]
                return
            case '--file=*'
                string replace -- --file= '' $tokens[$i]
                return
        end
    end
end

function __llamasup_names --description 'model ids or agents of the local profile set'
    command llamasup __complete $argv[1] (__llamasup_profile) 2>/dev/null
end

function __llamasup_targets --description 'MODEL, or MODEL@AGENT once an @ is typed'
    set -l current (commandline -ct)
    if string match -q -- '*@*' $current
        set -l model (string split -m 1 @ -- $current)[1]
        for agent in (__llamasup_names agents)
            echo $model@$agent
        end
    else
        __llamasup_names models
    end
end
"""


def _fish_values(value: tuple[str, ...]) -> str:
    return _FISH_SOURCES.get(value[0], f"-x -a {_words(value)}")


def _fish_option(condition: str, flags: tuple[str, ...]) -> str:
    parts = [f"complete -c llamasup -n {condition}"]
    for flag in flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        elif len(flag) == 2:
            parts.append(f"-s {flag[1]}")
        else:
            parts.append(f"-o {flag[1:]}")
    return " ".join(parts)


_FISH_SOURCES = {
    MODEL: "-x -a '(__llamasup_names models)'",
    AGENT: "-x -a '(__llamasup_names agents)'",
    TARGET: "-x -a '(__llamasup_targets)'",
    FILE: "-r -F",
    ANY: "-x",
}


def _fish(tree: CommandSpec, version: str) -> str:
    header = _header(
        "fish",
        version,
        "llamasup completion fish | source",
        "llamasup completion fish > ~/.config/fish/completions/llamasup.fish",
    )
    switch = ["function __llamasup_subcommands", '    switch "$argv"']
    lines = ["complete -c llamasup -f"]
    for command in tree.walk():
        condition = shlex.quote(f"__llamasup_at {command.name}".rstrip())
        if command.subcommands:
            names = " ".join(sub.path[-1] for sub in command.subcommands)
            switch.append(f"        case {shlex.quote(command.name)}")
            switch.append(f"            printf '%s\\n' {names}")
        for sub in command.subcommands:
            lines.append(
                f"complete -c llamasup -n {condition} -a {sub.path[-1]} -d {shlex.quote(sub.help)}"
            )
        for option in command.options:
            line = _fish_option(condition, option.flags)
            if option.value is not None:
                line += " " + _fish_values(option.value)
            if option.help:
                line += f" -d {shlex.quote(option.help)}"
            lines.append(line)
        if command.positionals and command.positionals[0] != (ANY,):
            lines.append(
                f"complete -c llamasup -n {condition} {_fish_values(command.positionals[0])}"
            )
    switch += ["    end", "end"]
    return header + _FISH_FUNCTIONS + "\n" + "\n".join(switch) + "\n\n" + "\n".join(lines) + "\n"
