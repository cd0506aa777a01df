/** `keyward agent --help`; kept apart from agent.ts so that help loads no crypto or HTTP code. */
export const AGENT_USAGE = `Usage: keyward agent --token T --out DIR [--hook CMD] [--server URL]
                     [--ca-file FILE | --root-fingerprint SHA256 [--roots-url URL]] [--once]
  --token T                 a bootstrap token from \`keyward token create\`
  --out DIR                 where key.pem (0600), cert.pem and bundle.pem are written
  --hook CMD                run with sh -c after each certificate is written, and after
                            bundle.pem changes (KEYWARD_CERT, KEYWARD_KEY, KEYWARD_BUNDLE,
                            KEYWARD_SERIAL set)
  --server URL              the CA's HTTPS base URL (default: from the token's audience)
  --ca-file FILE            the roots to trust for the first connection
  --root-fingerprint SHA256 bootstrap by fingerprint: fetch the CA's roots (<server>/roots.pem),
                            keep the one with this SHA-256 fingerprint (as \`keyward serve\` prints
                            it; colons and case do not matter) and trust only that root
  --roots-url URL           where to fetch the roots from instead (http: or https:)
  --once                    exit after the first certificate
With neither --ca-file nor --root-fingerprint the system's trust store is used. Renewals trust the
bundle the CA returned. Between renewals the agent asks <server>/v1/bundle for the roots at the
interval the CA hints (mesh.bundleRefreshHint) and rewrites bundle.pem when they change, so a new
root (keyward ca rotate-root) is trusted before any peer's certificate chains to it.
`;
