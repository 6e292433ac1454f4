# bash completion for hotplugd(8)                          -*- shell-script -*-
#
# Installed as $(PREFIX)/share/bash-completion/completions/hotplugd, where
# bash-completion loads it on first use; it also works when sourced
# directly, without bash-completion.

_hotplugd()
{
    local cur prev cword split
    local -a words
    if declare -F _init_completion >/dev/null 2>&1; then
        # bash-completion: handles --flag=value and redirections.
        _init_completion -s || return
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=
        ((cword > 0)) && prev=${COMP_WORDS[cword - 1]}
        # COMP_WORDBREAKS splits "--config=x" into "--config" "=" "x".
        if [[ $cur == "=" ]]; then
            cur=
        elif [[ $prev == "=" ]] && ((cword > 1)); then
            prev=${COMP_WORDS[cword - 2]}
        fi
    fi

    local commands="run check monitor test trigger status eject reload settle version help"
    local actions="add remove change move online offline bind unbind"

    # The command is the first word after "hotplugd" that is not a flag.
    local cmd= i
    for ((i = 1; i < cword; i++)); do
        if [[ ${words[i]} != -* && ${words[i]} != "=" ]]; then
            cmd=${words[i]}
            break
        fi
    done

    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands --help" -- "$cur"))
        return
    fi

    # The value of a flag.
    case $prev in
        --config | -config)
            _hotplugd_files yaml yml
            return
            ;;
        --event | -event | --socket | -socket)
            _hotplugd_files
            return
            ;;
        --replay | -replay)
            _hotplugd_files jsonl json
            return
            ;;
        --expect | -expect)
            _hotplugd_files yaml yml
            return
            ;;
        --timeout | -timeout)
            return
            ;;
        --source | -source)
            COMPREPLY=($(compgen -W "kernel udev auto route" -- "$cur"))
            return
            ;;
        --action | -action)
            COMPREPLY=($(compgen -W "$actions" -- "$cur"))
            return
            ;;
        --syspath | -syspath)
            [[ -z $cur ]] && cur=/sys/
            _hotplugd_files dir
            return
            ;;
        --subsystem | -subsystem)
            local subsystems d
            subsystems=$(for d in /sys/class/* /sys/bus/*; do
                [[ -e $d ]] && printf '%s\n' "${d##*/}"
            done | sort -u)
            COMPREPLY=($(compgen -W "$subsystems" -- "$cur"))
            return
            ;;
    esac

    local flags=
    case $cmd in
        run | check) flags="--config" ;;
        monitor) flags="--json --walk --source --subsystem" ;;
        test) flags="--config --event --syspath --action --replay --expect --update" ;;
        trigger) flags="--action --subsystem --dry-run" ;;
        status) flags="--json --socket" ;;
        eject) flags="--power-off --force --timeout --json --socket" ;;
        reload) flags="--socket" ;;
        settle) flags="--timeout --socket" ;;
        version | help) flags= ;;
        *) return ;;
    esac
    if [[ $cmd == eject && $cur != -* ]]; then
        # eject: a device node, a mount point, LABEL= or UUID=.
        if [[ $cur == /* ]]; then
            _hotplugd_files
        else
            COMPREPLY=($(compgen -W "LABEL= UUID=" -- "$cur"))
            compopt -o nospace 2>/dev/null
        fi
        return
    fi
    if [[ $cmd != test || -z $cur || $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
        return
    fi
    # test: an event as KEY=VALUE properties; offer the usual keys.
    COMPREPLY=($(compgen -W "ACTION= SUBSYSTEM= DEVTYPE= DEVNAME= DEVPATH= ID_FS_TYPE= ID_FS_LABEL= ID_FS_UUID= ID_FS_USAGE= ID_BUS=" -- "$cur"))
    [[ ${#COMPREPLY[@]} -gt 0 ]] && compopt -o nospace 2>/dev/null
}

# _hotplugd_files [dir | EXT...]: directories and, unless "dir", the files
# (with one of the extensions EXT, if given) matching $cur.
_hotplugd_files()
{
    local IFS=$'\n' f ext
    COMPREPLY=()
    compopt -o filenames 2>/dev/null
    for f in $(compgen -d -- "$cur"); do
        COMPREPLY+=("$f")
    done
    [[ $1 == dir ]] && return
    for f in $(compgen -f -- "$cur"); do
        [[ -d $f ]] && continue
        if (($# == 0)); then
            COMPREPLY+=("$f")
            continue
        fi
        for ext in "$@"; do
            if [[ $f == *."$ext" ]]; then
                COMPREPLY+=("$f")
                break
            fi
        done
    done
}

complete -F _hotplugd hotplugd
