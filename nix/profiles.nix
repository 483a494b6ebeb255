# The profiles of this repository as Nix sees them, for flake.nix's image derivations: for every
# profiles/*.toml its `name`, its source URL (following `extends`, like hc1img) and that URL's
# pin from profiles/hc1img.lock (null until `hc1img lock` has written one). Pure: evaluate with
#   nix-instantiate --eval --strict --json -E 'import ./nix/profiles.nix { root = ./.; }'
{ root }:
let
  readToml = path: builtins.fromTOML (builtins.readFile path);
  dir = root + "/profiles";
  lock = readToml (dir + "/hc1img.lock");
  pins = lock.pins or { };
  # The nearest `[source] url` along the `extends` chain (paths relative to each file).
  sourceUrl = path:
    let t = readToml path; in
    if t ? source && t.source ? url then t.source.url
    else if t ? extends then sourceUrl (dirOf path + "/${t.extends}")
    else null;
  isProfile = n: type: type == "regular" && builtins.match ".*\\.toml" n != null;
  files = builtins.filter (n: isProfile n (builtins.readDir dir).${n})
    (builtins.attrNames (builtins.readDir dir));
  describe = file:
    let
      path = dir + "/${file}";
      url = sourceUrl path;
    in
    {
      name = (readToml path).name;
      inherit file url;
      pin = if url != null && pins ? ${url} then pins.${url} else null;
    };
in
builtins.listToAttrs (map (f: let p = describe f; in { name = p.name; value = p; }) files)
