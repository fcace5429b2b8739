#!/bin/bash

__postie_cursor_index_in_current_word() {
    local remaining="${COMP_LINE}"

    local word
    for word in "${COMP_WORDS[@]::COMP_CWORD}"; do
        remaining="${remaining##*([[:space:]])"${word}"*([[:space:]])}"
    done

    local -ir index="$((COMP_POINT - ${#COMP_LINE} + ${#remaining}))"
    if [[ "${index}" -le 0 ]]; then
        printf 0
    else
        printf %s "${index}"
    fi
}

# positional arguments:
#
# - 1: the current (sub)command's count of positional arguments
#
# required variables:
#
# - repeating_flags: the repeating flags that the current (sub)command can accept
# - non_repeating_flags: the non-repeating flags that the current (sub)command can accept
# - repeating_options: the repeating options that the current (sub)command can accept
# - non_repeating_options: the non-repeating options that the current (sub)command can accept
# - positional_number: value ignored
# - unparsed_words: unparsed words from the current command line
#
# modified variables:
#
# - non_repeating_flags: remove flags for this (sub)command that are already on the command line
# - non_repeating_options: remove options for this (sub)command that are already on the command line
# - positional_number: set to the current positional number
# - unparsed_words: remove all flags, options, and option values for this (sub)command
__postie_offer_flags_options() {
    local -ir positional_count="${1}"
    positional_number=0

    local was_flag_option_terminator_seen=false
    local is_parsing_option_value=false

    local -ar unparsed_word_indices=("${!unparsed_words[@]}")
    local -i word_index
    for word_index in "${unparsed_word_indices[@]}"; do
        if "${is_parsing_option_value}"; then
            # This word is an option value:
            # Reset marker for next word iff not currently the last word
            [[ "${word_index}" -ne "${unparsed_word_indices[${#unparsed_word_indices[@]} - 1]}" ]] && is_parsing_option_value=false
            unset "unparsed_words[${word_index}]"
            # Do not process this word as a flag or an option
            continue
        fi

        local word="${unparsed_words["${word_index}"]}"
        if ! "${was_flag_option_terminator_seen}"; then
            case "${word}" in
            --)
                unset "unparsed_words[${word_index}]"
                # by itself -- is a flag/option terminator, but if it is the last word, it is the start of a completion
                if [[ "${word_index}" -ne "${unparsed_word_indices[${#unparsed_word_indices[@]} - 1]}" ]]; then
                    was_flag_option_terminator_seen=true
                fi
                continue
                ;;
            -*)
                # ${word} is a flag or an option
                # If ${word} is an option, mark that the next word to be parsed is an option value
                local option
                for option in "${repeating_options[@]}" "${non_repeating_options[@]}"; do
                    [[ "${word}" = "${option}" ]] && is_parsing_option_value=true && break
                done

                # Remove ${word} from ${non_repeating_flags} or ${non_repeating_options} so it isn't offered again
                local not_found=true
                local -i index
                for index in "${!non_repeating_flags[@]}"; do
                    if [[ "${non_repeating_flags[${index}]}" = "${word}" ]]; then
                        unset "non_repeating_flags[${index}]"
                        non_repeating_flags=("${non_repeating_flags[@]}")
                        not_found=false
                        break
                    fi
                done
                if "${not_found}"; then
                    for index in "${!non_repeating_flags[@]}"; do
                        if [[ "${non_repeating_flags[${index}]}" = "${word}" ]]; then
                            unset "non_repeating_flags[${index}]"
                            non_repeating_flags=("${non_repeating_flags[@]}")
                            break
                        fi
                    done
                fi
                unset "unparsed_words[${word_index}]"
                continue
                ;;
            esac
        fi

        # ${word} is neither a flag, nor an option, nor an option value
        if [[ "${positional_number}" -lt "${positional_count}" || "${positional_count}" -lt 0 ]]; then
            # ${word} is a positional
            ((positional_number++))
            unset "unparsed_words[${word_index}]"
        else
            if [[ -z "${word}" ]]; then
                # Could be completing a flag, option, or subcommand
                positional_number=-1
            else
                # ${word} is a subcommand or invalid, so stop processing this (sub)command
                positional_number=-2
            fi
            break
        fi
    done

    unparsed_words=("${unparsed_words[@]}")

    if\
        ! "${was_flag_option_terminator_seen}"\
        && ! "${is_parsing_option_value}"\
        && [[ ("${cur}" = -* && "${positional_number}" -ge 0) || "${positional_number}" -eq -1 ]]
    then
        COMPREPLY+=($(compgen -W "${repeating_flags[*]} ${non_repeating_flags[*]} ${repeating_options[*]} ${non_repeating_options[*]}" -- "${cur}"))
    fi
}

__postie_add_completions() {
    local completion
    while IFS='' read -r completion; do
        COMPREPLY+=("${completion}")
    done < <(IFS=$'\n' compgen "${@}" -- "${cur}")
}

__postie_custom_complete() {
    if [[ -n "${cur}" || -z ${COMP_WORDS[${COMP_CWORD}]} || "${COMP_LINE:${COMP_POINT}:1}" != ' ' ]]; then
        local -ar words=("${COMP_WORDS[@]}")
    else
        local -ar words=("${COMP_WORDS[@]::${COMP_CWORD}}" '' "${COMP_WORDS[@]:${COMP_CWORD}}")
    fi

    "${COMP_WORDS[0]}" "${@}" "${words[@]}"
}

_postie() {
    local state
    state="$(shopt -p;shopt -po)"
    trap "${state//$'\n'/;}" RETURN
    shopt -s extglob
    set +o history +o posix

    local -xr SAP_SHELL=bash
    local -x SAP_SHELL_VERSION
    SAP_SHELL_VERSION="$(IFS='.';printf %s "${BASH_VERSINFO[*]}")"
    local -r SAP_SHELL_VERSION

    local -r cur="${2}"
    local -r prev="${3}"

    local -i positional_number
    local -a unparsed_words=("${COMP_WORDS[@]:1:${COMP_CWORD}}")

    local -a repeating_flags=()
    local -a non_repeating_flags=(--version -h --help)
    local -a repeating_options=()
    local -a non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    serve|check|config|user|pw|deliver|migrate|fetch|bench|db|mailbox|admin|help)
        # Offer subcommand argument completions
        "_postie_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'serve check config user pw deliver migrate fetch bench db mailbox admin help' -- "${cur}"))
        ;;
    esac
}

_postie_serve() {
    repeating_flags=()
    non_repeating_flags=(--pop3-reuse-xuidl --require-tls --apop --require-mfa --quota-full-tempfail --demo --version -h --help)
    repeating_options=(--listen --listen-tls --tls-sni --trusted-network --allow --deny --proxy-from --lockout-exempt --passdb --userdb --listen-lmtp)
    non_repeating_options=(--passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config --tls-cert --tls-key --tls-alt-cert --tls-alt-key --tls-min-version --max-connections --max-connections-per-ip --max-userip-connections --run-as --idle-timeout --login-timeout --auth-failure-delay --lockout-threshold --lockout-window --lockout-duration --lockout-state --auth-cache-size --auth-cache-ttl --auth-cache-negative-ttl --log-level --metrics --audit-log --control-socket --auth-mechanisms --oauth2-jwks --oauth2-introspection-url --oauth2-client-credentials --oauth2-issuer --oauth2-audience --oauth2-username-claim --oauth2-ca-file --lmtp-max-size --lmtp-max-recipients --lmtp-recipient --lmtp-spool-dir --deleted-retention --default-quota)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--listen')
        return
        ;;
    '--listen-tls')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    '--tls-cert')
        return
        ;;
    '--tls-key')
        return
        ;;
    '--tls-alt-cert')
        return
        ;;
    '--tls-alt-key')
        return
        ;;
    '--tls-sni')
        return
        ;;
    '--tls-min-version')
        return
        ;;
    '--trusted-network')
        return
        ;;
    '--allow')
        return
        ;;
    '--deny')
        return
        ;;
    '--proxy-from')
        return
        ;;
    '--max-connections')
        return
        ;;
    '--max-connections-per-ip')
        return
        ;;
    '--max-userip-connections')
        return
        ;;
    '--run-as')
        return
        ;;
    '--idle-timeout')
        return
        ;;
    '--login-timeout')
        return
        ;;
    '--auth-failure-delay')
        return
        ;;
    '--lockout-threshold')
        return
        ;;
    '--lockout-window')
        return
        ;;
    '--lockout-duration')
        return
        ;;
    '--lockout-exempt')
        return
        ;;
    '--lockout-state')
        return
        ;;
    '--passdb')
        return
        ;;
    '--userdb')
        return
        ;;
    '--auth-cache-size')
        return
        ;;
    '--auth-cache-ttl')
        return
        ;;
    '--auth-cache-negative-ttl')
        return
        ;;
    '--log-level')
        return
        ;;
    '--metrics')
        return
        ;;
    '--audit-log')
        return
        ;;
    '--control-socket')
        return
        ;;
    '--auth-mechanisms')
        return
        ;;
    '--oauth2-jwks')
        return
        ;;
    '--oauth2-introspection-url')
        return
        ;;
    '--oauth2-client-credentials')
        return
        ;;
    '--oauth2-issuer')
        return
        ;;
    '--oauth2-audience')
        return
        ;;
    '--oauth2-username-claim')
        return
        ;;
    '--oauth2-ca-file')
        return
        ;;
    '--listen-lmtp')
        return
        ;;
    '--lmtp-max-size')
        return
        ;;
    '--lmtp-max-recipients')
        return
        ;;
    '--lmtp-recipient')
        return
        ;;
    '--lmtp-spool-dir')
        return
        ;;
    '--deleted-retention')
        return
        ;;
    '--default-quota')
        return
        ;;
    esac
}

_postie_check() {
    repeating_flags=()
    non_repeating_flags=(--json --transcript --version -h --help)
    repeating_options=(--warning --critical)
    non_repeating_options=(--port --tls-port --user --password-file --login-method --ca-file --timeout)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--port')
        return
        ;;
    '--tls-port')
        return
        ;;
    '--user')
        return
        ;;
    '--password-file')
        return
        ;;
    '--login-method')
        return
        ;;
    '--ca-file')
        return
        ;;
    '--timeout')
        return
        ;;
    '--warning')
        return
        ;;
    '--critical')
        return
        ;;
    esac
}

_postie_config() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    check)
        # Offer subcommand argument completions
        "_postie_config_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'check' -- "${cur}"))
        ;;
    esac
}

_postie_config_check() {
    repeating_flags=()
    non_repeating_flags=(--pop3-reuse-xuidl --require-tls --apop --require-mfa --quota-full-tempfail --version -h --help)
    repeating_options=(--listen --listen-tls --tls-sni --trusted-network --allow --deny --proxy-from --lockout-exempt --passdb --userdb --listen-lmtp)
    non_repeating_options=(--passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config --tls-cert --tls-key --tls-alt-cert --tls-alt-key --tls-min-version --max-connections --max-connections-per-ip --max-userip-connections --run-as --idle-timeout --login-timeout --auth-failure-delay --lockout-threshold --lockout-window --lockout-duration --lockout-state --auth-cache-size --auth-cache-ttl --auth-cache-negative-ttl --log-level --metrics --audit-log --control-socket --auth-mechanisms --oauth2-jwks --oauth2-introspection-url --oauth2-client-credentials --oauth2-issuer --oauth2-audience --oauth2-username-claim --oauth2-ca-file --lmtp-max-size --lmtp-max-recipients --lmtp-recipient --lmtp-spool-dir --deleted-retention --default-quota)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--listen')
        return
        ;;
    '--listen-tls')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    '--tls-cert')
        return
        ;;
    '--tls-key')
        return
        ;;
    '--tls-alt-cert')
        return
        ;;
    '--tls-alt-key')
        return
        ;;
    '--tls-sni')
        return
        ;;
    '--tls-min-version')
        return
        ;;
    '--trusted-network')
        return
        ;;
    '--allow')
        return
        ;;
    '--deny')
        return
        ;;
    '--proxy-from')
        return
        ;;
    '--max-connections')
        return
        ;;
    '--max-connections-per-ip')
        return
        ;;
    '--max-userip-connections')
        return
        ;;
    '--run-as')
        return
        ;;
    '--idle-timeout')
        return
        ;;
    '--login-timeout')
        return
        ;;
    '--auth-failure-delay')
        return
        ;;
    '--lockout-threshold')
        return
        ;;
    '--lockout-window')
        return
        ;;
    '--lockout-duration')
        return
        ;;
    '--lockout-exempt')
        return
        ;;
    '--lockout-state')
        return
        ;;
    '--passdb')
        return
        ;;
    '--userdb')
        return
        ;;
    '--auth-cache-size')
        return
        ;;
    '--auth-cache-ttl')
        return
        ;;
    '--auth-cache-negative-ttl')
        return
        ;;
    '--log-level')
        return
        ;;
    '--metrics')
        return
        ;;
    '--audit-log')
        return
        ;;
    '--control-socket')
        return
        ;;
    '--auth-mechanisms')
        return
        ;;
    '--oauth2-jwks')
        return
        ;;
    '--oauth2-introspection-url')
        return
        ;;
    '--oauth2-client-credentials')
        return
        ;;
    '--oauth2-issuer')
        return
        ;;
    '--oauth2-audience')
        return
        ;;
    '--oauth2-username-claim')
        return
        ;;
    '--oauth2-ca-file')
        return
        ;;
    '--listen-lmtp')
        return
        ;;
    '--lmtp-max-size')
        return
        ;;
    '--lmtp-max-recipients')
        return
        ;;
    '--lmtp-recipient')
        return
        ;;
    '--lmtp-spool-dir')
        return
        ;;
    '--deleted-retention')
        return
        ;;
    '--default-quota')
        return
        ;;
    esac
}

_postie_user() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    add|passwd|del|list|app-password)
        # Offer subcommand argument completions
        "_postie_user_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'add passwd del list app-password' -- "${cur}"))
        ;;
    esac
}

_postie_user_add() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --scheme --home --extra)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--scheme')
        return
        ;;
    '--home')
        return
        ;;
    '--extra')
        return
        ;;
    esac
}

_postie_user_passwd() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --scheme)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--scheme')
        return
        ;;
    esac
}

_postie_user_del() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_user_list() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=(--passdb)
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--passdb')
        return
        ;;
    esac
}

_postie_user_app-password() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    add|list|revoke)
        # Offer subcommand argument completions
        "_postie_user_app-password_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'add list revoke' -- "${cur}"))
        ;;
    esac
}

_postie_user_app-password_add() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--name --expires --passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--name')
        return
        ;;
    '--expires')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_user_app-password_list() {
    repeating_flags=()
    non_repeating_flags=(--json --version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_user_app-password_revoke() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 2

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_pw() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    hash)
        # Offer subcommand argument completions
        "_postie_pw_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'hash' -- "${cur}"))
        ;;
    esac
}

_postie_pw_hash() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--scheme)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--scheme')
        return
        ;;
    esac
}

_postie_deliver() {
    repeating_flags=()
    non_repeating_flags=(--quota-full-tempfail --version -h --help)
    repeating_options=(--passdb --userdb)
    non_repeating_options=(--user --maildir --mbox --to --dovecot-control --passwd-file --store --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --max-size --spool-dir --default-quota --username-format --default-domain)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--user')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--to')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--passdb')
        return
        ;;
    '--userdb')
        return
        ;;
    '--store')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--max-size')
        return
        ;;
    '--spool-dir')
        return
        ;;
    '--default-quota')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    esac
}

_postie_migrate() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    pop3|compare)
        # Offer subcommand argument completions
        "_postie_migrate_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'pop3 compare' -- "${cur}"))
        ;;
    esac
}

_postie_migrate_pop3() {
    repeating_flags=()
    non_repeating_flags=(--delete-source --version -h --help)
    repeating_options=()
    non_repeating_options=(--server --tls --ca-file --server-name --user --password-file --users-file --to-maildir --dovecot-control)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--server')
        return
        ;;
    '--tls')
        __postie_add_completions -W 'implicit'$'\n''starttls'$'\n''none'
        return
        ;;
    '--ca-file')
        return
        ;;
    '--server-name')
        return
        ;;
    '--user')
        return
        ;;
    '--password-file')
        return
        ;;
    '--users-file')
        return
        ;;
    '--to-maildir')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    esac
}

_postie_migrate_compare() {
    repeating_flags=()
    non_repeating_flags=(--json --version -h --help)
    repeating_options=()
    non_repeating_options=(--a --b --a-tls --b-tls --a-ca-file --b-ca-file --a-server-name --b-server-name --user --password-file --users-file)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--a')
        return
        ;;
    '--b')
        return
        ;;
    '--a-tls')
        __postie_add_completions -W 'implicit'$'\n''starttls'$'\n''none'
        return
        ;;
    '--b-tls')
        __postie_add_completions -W 'implicit'$'\n''starttls'$'\n''none'
        return
        ;;
    '--a-ca-file')
        return
        ;;
    '--b-ca-file')
        return
        ;;
    '--a-server-name')
        return
        ;;
    '--b-server-name')
        return
        ;;
    '--user')
        return
        ;;
    '--password-file')
        return
        ;;
    '--users-file')
        return
        ;;
    esac
}

_postie_fetch() {
    repeating_flags=()
    non_repeating_flags=(--keep --mark-existing --rebuild-state --json --version -h --help)
    repeating_options=()
    non_repeating_options=(--server --tls --ca-file --user --password-file --login-method --to --delete-after --delete-larger --state-file --config --poll --timeout)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--server')
        return
        ;;
    '--tls')
        __postie_add_completions -W 'implicit'$'\n''starttls'$'\n''none'
        return
        ;;
    '--ca-file')
        return
        ;;
    '--user')
        return
        ;;
    '--password-file')
        return
        ;;
    '--login-method')
        return
        ;;
    '--to')
        return
        ;;
    '--delete-after')
        return
        ;;
    '--delete-larger')
        return
        ;;
    '--state-file')
        return
        ;;
    '--config')
        return
        ;;
    '--poll')
        return
        ;;
    '--timeout')
        return
        ;;
    esac
}

_postie_bench() {
    repeating_flags=()
    non_repeating_flags=(--resume --insecure --json --version -h --help)
    repeating_options=()
    non_repeating_options=(--server --tls --tls-port --ca-file --credentials --clients --duration --ramp-up --retr --delete-share --stall-after)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--server')
        return
        ;;
    '--tls')
        __postie_add_completions -W 'none'$'\n''starttls'$'\n''implicit'$'\n''mix'
        return
        ;;
    '--tls-port')
        return
        ;;
    '--ca-file')
        return
        ;;
    '--credentials')
        return
        ;;
    '--clients')
        return
        ;;
    '--duration')
        return
        ;;
    '--ramp-up')
        return
        ;;
    '--retr')
        return
        ;;
    '--delete-share')
        return
        ;;
    '--stall-after')
        return
        ;;
    esac
}

_postie_db() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    migrate|import)
        # Offer subcommand argument completions
        "_postie_db_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'migrate import' -- "${cur}"))
        ;;
    esac
}

_postie_db_migrate() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_db_import() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=(--user)
    non_repeating_options=(--database-url-file --database-pool-size --database-connect-timeout --database-keepalive)
    __postie_offer_flags_options -1

    # Offer option value completions
    case "${prev}" in
    '--user')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    esac
}

_postie_mailbox() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    deleted|undelete|export)
        # Offer subcommand argument completions
        "_postie_mailbox_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'deleted undelete export' -- "${cur}"))
        ;;
    esac
}

_postie_mailbox_deleted() {
    repeating_flags=()
    non_repeating_flags=(--json --pop3-reuse-xuidl --version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    esac
}

_postie_mailbox_undelete() {
    repeating_flags=()
    non_repeating_flags=(--all --pop3-reuse-xuidl --version -h --help)
    repeating_options=(--uidl)
    non_repeating_options=(--since --passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--uidl')
        return
        ;;
    '--since')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    esac
}

_postie_mailbox_export() {
    repeating_flags=()
    non_repeating_flags=(--pop3-reuse-xuidl --version -h --help)
    repeating_options=()
    non_repeating_options=(--to --lock-timeout --passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--to')
        return
        ;;
    '--lock-timeout')
        return
        ;;
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    esac
}

_postie_admin() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options 0

    # Offer subcommand / subcommand argument completions
    local -r subcommand="${unparsed_words[0]}"
    unset 'unparsed_words[0]'
    unparsed_words=("${unparsed_words[@]}")
    case "${subcommand}" in
    who|kick|penalty|unban|reload|quota)
        # Offer subcommand argument completions
        "_postie_admin_${subcommand}"
        ;;
    *)
        # Offer subcommand completions
        COMPREPLY+=($(compgen -W 'who kick penalty unban reload quota' -- "${cur}"))
        ;;
    esac
}

_postie_admin_who() {
    repeating_flags=()
    non_repeating_flags=(--json --all --version -h --help)
    repeating_options=()
    non_repeating_options=(--control-socket)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--control-socket')
        return
        ;;
    esac
}

_postie_admin_kick() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--address --control-socket)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--address')
        return
        ;;
    '--control-socket')
        return
        ;;
    esac
}

_postie_admin_penalty() {
    repeating_flags=()
    non_repeating_flags=(--json --version -h --help)
    repeating_options=()
    non_repeating_options=(--control-socket)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--control-socket')
        return
        ;;
    esac
}

_postie_admin_unban() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--control-socket)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--control-socket')
        return
        ;;
    esac
}

_postie_admin_reload() {
    repeating_flags=()
    non_repeating_flags=(--version -h --help)
    repeating_options=()
    non_repeating_options=(--control-socket)
    __postie_offer_flags_options 0

    # Offer option value completions
    case "${prev}" in
    '--control-socket')
        return
        ;;
    esac
}

_postie_admin_quota() {
    repeating_flags=()
    non_repeating_flags=(--json --pop3-reuse-xuidl --version -h --help)
    repeating_options=()
    non_repeating_options=(--passwd-file --maildir --mbox --dovecot-control --store --pop3-uidl-format --username-format --default-domain --database-url-file --database-pool-size --database-connect-timeout --database-keepalive --config --default-quota)
    __postie_offer_flags_options 1

    # Offer option value completions
    case "${prev}" in
    '--passwd-file')
        return
        ;;
    '--maildir')
        return
        ;;
    '--mbox')
        return
        ;;
    '--dovecot-control')
        return
        ;;
    '--store')
        return
        ;;
    '--pop3-uidl-format')
        return
        ;;
    '--username-format')
        return
        ;;
    '--default-domain')
        return
        ;;
    '--database-url-file')
        return
        ;;
    '--database-pool-size')
        return
        ;;
    '--database-connect-timeout')
        return
        ;;
    '--database-keepalive')
        return
        ;;
    '--config')
        return
        ;;
    '--default-quota')
        return
        ;;
    esac
}

_postie_help() {
    repeating_flags=()
    non_repeating_flags=(--version)
    repeating_options=()
    non_repeating_options=()
    __postie_offer_flags_options -1
}

complete -o filenames -F _postie postie
