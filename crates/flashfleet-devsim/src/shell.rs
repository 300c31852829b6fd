//! The small part of busybox `ash` syntax the simulated devices understand: words with single
//! quotes, double quotes and backslashes; `&&`, `||` and `;`; pipes; and the redirections
//! `>`, `>>`, `2>` and `2>&1`.
//!
//! There is no variable expansion, globbing or subshell: no command the upgrader sends needs
//! them, and a command using them fails visibly instead of doing something else silently.

/// A parsed command line: pipelines joined by `&&`, `||` or `;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    pub(crate) first: Pipeline,
    pub(crate) rest: Vec<(Connector, Pipeline)>,
}

/// How a pipeline is joined to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connector {
    /// `&&`: run when the previous status is 0.
    And,
    /// `||`: run when the previous status is not 0.
    Or,
    /// `;`: always run.
    Then,
}

/// Simple commands joined by `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pipeline {
    pub(crate) commands: Vec<SimpleCommand>,
}

/// A command name, its arguments and its redirections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimpleCommand {
    pub(crate) words: Vec<String>,
    pub(crate) redirections: Vec<Redirection>,
}

/// One output redirection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redirection {
    /// 1 for stdout, 2 for stderr.
    pub(crate) fd: u32,
    pub(crate) target: RedirectionTarget,
}

/// Where a redirection sends its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedirectionTarget {
    /// `> path` or `>> path`.
    File { path: String, append: bool },
    /// `>&N`: the other stream.
    Duplicate(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    And,
    Or,
    Semicolon,
    Pipe,
    Redirect {
        fd: u32,
        append: bool,
        duplicate: Option<u32>,
    },
}

/// Parses a command line; the error is what `ash` would print after `/bin/ash: `.
pub(crate) fn parse(line: &str) -> Result<Script, String> {
    let tokens = tokenize(line)?;
    let mut pipelines = Vec::new();
    let mut connectors = Vec::new();
    let mut commands = Vec::new();
    let mut current = SimpleCommand {
        words: Vec::new(),
        redirections: Vec::new(),
    };
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            Token::Word(word) => current.words.push(word),
            Token::Redirect {
                fd,
                append,
                duplicate,
            } => {
                let target = match duplicate {
                    Some(other) => RedirectionTarget::Duplicate(other),
                    None => match tokens.next() {
                        Some(Token::Word(path)) => RedirectionTarget::File { path, append },
                        _ => return Err("syntax error: unexpected redirection".to_owned()),
                    },
                };
                current.redirections.push(Redirection { fd, target });
            }
            Token::Pipe | Token::And | Token::Or | Token::Semicolon => {
                if current.words.is_empty() {
                    return Err(format!(
                        "syntax error: unexpected \"{}\"",
                        token_text(&token)
                    ));
                }
                commands.push(std::mem::replace(
                    &mut current,
                    SimpleCommand {
                        words: Vec::new(),
                        redirections: Vec::new(),
                    },
                ));
                let connector = match token {
                    Token::Pipe => continue,
                    Token::And => Connector::And,
                    Token::Or => Connector::Or,
                    _ => Connector::Then,
                };
                pipelines.push(Pipeline {
                    commands: std::mem::take(&mut commands),
                });
                connectors.push(connector);
            }
        }
    }
    if current.words.is_empty() {
        // A trailing `;` is fine, a trailing `&&`, `||` or `|` is not.
        if !commands.is_empty() || connectors.last().is_some_and(|c| *c != Connector::Then) {
            return Err("syntax error: unexpected end of file".to_owned());
        }
        if !current.redirections.is_empty() {
            return Err("syntax error: redirection without a command".to_owned());
        }
        if connectors.last() == Some(&Connector::Then) {
            connectors.pop();
        }
    } else {
        commands.push(current);
        pipelines.push(Pipeline { commands });
    }
    let mut pipelines = pipelines.into_iter();
    let Some(first) = pipelines.next() else {
        return Err("empty command".to_owned());
    };
    Ok(Script {
        first,
        rest: connectors.into_iter().zip(pipelines).collect(),
    })
}

fn token_text(token: &Token) -> &'static str {
    match token {
        Token::And => "&&",
        Token::Or => "||",
        Token::Semicolon => ";",
        Token::Pipe => "|",
        Token::Word(_) | Token::Redirect { .. } => "word",
    }
}

fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    // Whether a word is being built (an empty quoted string is a word).
    let mut in_word = false;
    // Whether the current word had quotes or backslashes (then `2>` is not a redirection).
    let mut quoted = false;
    let mut chars = line.chars().peekable();

    fn finish(tokens: &mut Vec<Token>, word: &mut String, in_word: &mut bool, quoted: &mut bool) {
        if *in_word {
            tokens.push(Token::Word(std::mem::take(word)));
        }
        *in_word = false;
        *quoted = false;
    }

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => finish(&mut tokens, &mut word, &mut in_word, &mut quoted),
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("syntax error: unterminated quoted string".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err("syntax error: unterminated quoted string".to_owned());
                            }
                        },
                        Some(c) => word.push(c),
                        None => return Err("syntax error: unterminated quoted string".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                quoted = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => word.push(c),
                }
            }
            '&' => {
                finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
                if chars.next_if_eq(&'&').is_some() {
                    tokens.push(Token::And);
                } else {
                    return Err("background jobs (&) are not simulated".to_owned());
                }
            }
            '|' => {
                finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
                if chars.next_if_eq(&'|').is_some() {
                    tokens.push(Token::Or);
                } else {
                    tokens.push(Token::Pipe);
                }
            }
            ';' => {
                finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
                tokens.push(Token::Semicolon);
            }
            '>' => {
                let fd = if in_word && !quoted && (word == "1" || word == "2") {
                    let fd = if word == "2" { 2 } else { 1 };
                    word.clear();
                    in_word = false;
                    fd
                } else {
                    finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
                    1
                };
                let append = chars.next_if_eq(&'>').is_some();
                let duplicate = if chars.next_if_eq(&'&').is_some() {
                    match chars.next() {
                        Some('1') => Some(1),
                        Some('2') => Some(2),
                        _ => return Err("syntax error: bad fd number".to_owned()),
                    }
                } else {
                    None
                };
                tokens.push(Token::Redirect {
                    fd,
                    append,
                    duplicate,
                });
            }
            '<' | '(' | ')' | '`' => {
                return Err(format!("syntax error: `{c}` is not simulated"));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &SimpleCommand) -> Vec<&str> {
        command.words.iter().map(String::as_str).collect()
    }

    #[test]
    fn quoted_paths_lose_their_quotes() {
        let script = parse(r#"scp -t '/tmp/it'"'"'s image.bin'"#).unwrap();
        assert_eq!(
            words(&script.first.commands[0]),
            ["scp", "-t", "/tmp/it's image.bin"]
        );
        let script = parse(r#"echo "a \"b\" \x" c\ d ''"#).unwrap();
        assert_eq!(
            words(&script.first.commands[0]),
            ["echo", r#"a "b" \x"#, "c d", ""]
        );
    }

    #[test]
    fn compound_commands_split_into_pipelines_and_redirections() {
        let script = parse("sync && echo 3 > /proc/sys/vm/drop_caches").unwrap();
        assert_eq!(words(&script.first.commands[0]), ["sync"]);
        let (connector, second) = &script.rest[0];
        assert_eq!(*connector, Connector::And);
        assert_eq!(words(&second.commands[0]), ["echo", "3"]);
        assert_eq!(
            second.commands[0].redirections,
            [Redirection {
                fd: 1,
                target: RedirectionTarget::File {
                    path: "/proc/sys/vm/drop_caches".to_owned(),
                    append: false
                }
            }]
        );

        let script = parse("cat /proc/meminfo | grep MemAvailable").unwrap();
        assert_eq!(script.first.commands.len(), 2);
        assert_eq!(words(&script.first.commands[1]), ["grep", "MemAvailable"]);

        let script = parse("rm /etc/openwisp/checksum 2> /dev/null").unwrap();
        assert_eq!(
            words(&script.first.commands[0]),
            ["rm", "/etc/openwisp/checksum"]
        );
        assert_eq!(script.first.commands[0].redirections[0].fd, 2);

        let script = parse("false || echo x 2>&1; true;").unwrap();
        assert_eq!(script.rest.len(), 2);
        assert_eq!(
            script.rest[0].1.commands[0].redirections[0].target,
            RedirectionTarget::Duplicate(1)
        );
    }

    #[test]
    fn a_quoted_two_before_a_redirection_stays_a_word() {
        let script = parse("echo '2'> /tmp/x").unwrap();
        assert_eq!(words(&script.first.commands[0]), ["echo", "2"]);
        assert_eq!(script.first.commands[0].redirections[0].fd, 1);
    }

    #[test]
    fn broken_syntax_is_refused() {
        for line in [
            "",
            "   ",
            "&& true",
            "true &&",
            "echo 'open",
            "true | ",
            "sleep 1 &",
            "> x",
        ] {
            assert!(parse(line).is_err(), "{line:?}");
        }
    }
}
