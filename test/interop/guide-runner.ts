import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** One fenced block of a guide and what the comment line before it says to do with it. */
export interface GuideBlock {
  lang: string;
  code: string;
  mode: 'run' | 'file' | 'background' | 'not-run';
  /** For `file`: where to write it; for `not-run`: why. */
  arg?: string;
}

const FENCE = /(?:<!-- (file|background|not run)(?::\s*(.*?))? -->\n)?```([\w-]*)\n([\s\S]*?)```/g;

/** The blocks of a markdown guide: `sh` blocks run, annotated blocks are files or background jobs. */
export function guideBlocks(file: string, section?: string): GuideBlock[] {
  let text = readFileSync(file, 'utf8');
  if (section) {
    // Only that section: from its heading to the next heading of the same level.
    const level = /^#+/.exec(section)![0];
    const start = text.indexOf(`${section}\n`);
    if (start < 0) throw new Error(`${file} has no section "${section}"`);
    const end = text.slice(start + section.length).search(new RegExp(`\\n${level} `));
    text = text.slice(start, end < 0 ? undefined : start + section.length + end);
  }
  const blocks: GuideBlock[] = [];
  for (const m of text.matchAll(FENCE)) {
    const [, note, arg, lang, code] = m;
    if (note === 'file') blocks.push({ lang: lang!, code: code!, mode: 'file', arg: arg!.trim() });
    else if (note === 'background') blocks.push({ lang: lang!, code: code!, mode: 'background' });
    else if (note === 'not run') blocks.push({ lang: lang!, code: code!, mode: 'not-run', arg: arg?.trim() });
    else if (lang === 'sh') blocks.push({ lang: lang!, code: code!, mode: 'run' });
  }
  return blocks;
}

/**
 * A bash script that does what the guide says, in order: files written, background jobs started
 * (and stopped when the script ends), every other `sh` block run as written with `set -e`.
 * `keepAlive` ends it with `touch .ready; wait` instead, for a guide whose servers others use.
 */
export function guideScript(blocks: GuideBlock[], keepAlive = false): string {
  const lines = [
    'set -eo pipefail',
    'jobs_=()',
    'trap \'for p in "${jobs_[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null\' EXIT',
  ];
  blocks.forEach((b, i) => {
    if (b.mode === 'file')
      lines.push(
        `mkdir -p "$(dirname '${b.arg}')"`,
        `cat > '${b.arg}' <<'KW_EOF_${i}'`,
        b.code.trimEnd(),
        `KW_EOF_${i}`,
      );
    if (b.mode === 'background') lines.push(`( ${b.code.trim()} ) > background-${i}.log 2>&1 &`, 'jobs_+=($!)');
    if (b.mode === 'run') lines.push(`echo '+ block ${i}' >&2`, b.code.trimEnd());
  });
  if (keepAlive) lines.push('touch .ready', 'wait');
  return lines.join('\n') + '\n';
}

export interface ScriptRun {
  code: number;
  output: string;
}

/**
 * Runs a guide's script with bash in `cwd`. With `privateDirs`, inside a mount namespace where
 * those system directories (certbot's /etc/letsencrypt …) are the given empty directories, so the
 * guide's default paths work without touching the machine's.
 */
export function runScript(
  script: string,
  opts: { cwd: string; env: Record<string, string>; timeoutMs: number; privateDirs?: Record<string, string> },
): Promise<ScriptRun> & { kill(): void } {
  const binds = Object.entries(opts.privateDirs ?? {})
    .map(([target, source]) => `mkdir -p '${target}' && mount --bind '${source}' '${target}'`)
    .join(' && ');
  const args = binds ? ['-m', 'bash', '-c', `${binds} && exec bash -s`] : ['-s'];
  // A process group of its own, so that stopping it stops what its blocks started too.
  const child = spawn(binds ? 'unshare' : 'bash', args, {
    cwd: opts.cwd,
    env: opts.env,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const stop = () => {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      // already gone
    }
  };
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  child.stdin.end(script);
  const timer = setTimeout(stop, opts.timeoutMs);
  const done = new Promise<ScriptRun>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), output });
    }),
  ) as Promise<ScriptRun> & { kill(): void };
  done.kill = stop;
  return done;
}
