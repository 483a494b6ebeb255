{
  description = "hc1img: ready-to-boot disk images for Odroid HC1 nodes running Arch Linux ARM";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0"; # keep equal to Cargo.toml's package.version
      # Every profiles/*.toml with its source URL and pin (nix/profiles.nix).
      profiles = import ./nix/profiles.nix { root = ./.; };

      # A profile's images as a derivation: the pinned tarball is a fixed-output fetch, then
      # `hc1img build` writes ssd.img, sd.img and manifest.json into $out. Secrets are absolute
      # paths outside the store (`secretFiles = { admin_password_hash = "/run/keys/…"; }`),
      # readable in the sandbox through nix.conf's `extra-sandbox-paths`; they never enter
      # the store. The images are the same bytes `hc1img build` gives outside Nix.
      mkImage = pkgs: { profile, secretFiles ? { } }:
        let
          p = profiles.${profile} or (throw "hc1img: no profile named ${profile} in profiles/");
          pin = if p.pin != null then p.pin else
            throw "hc1img: profiles/${p.file}: ${p.url} has no pin in profiles/hc1img.lock; run `hc1img lock profiles/${p.file}` and commit the lock file";
          tarball = pkgs.fetchurl { url = p.url; sha256 = pin.sha256; };
          secretArgs = pkgs.lib.concatStringsSep " "
            (pkgs.lib.mapAttrsToList (n: f: "--secret ${n}=${f}") secretFiles);
        in
        pkgs.runCommand "hc1img-${p.name}-images" { nativeBuildInputs = [ self.packages.${pkgs.system}.default ]; } ''
          # stdenv sets SOURCE_DATE_EPOCH=1980; hc1img's default (the tarball's newest mtime)
          # keeps the images identical to builds outside Nix.
          unset SOURCE_DATE_EPOCH
          export HC1IMG_CACHE="$TMPDIR/cache"
          hc1img build ${./.}/profiles/${p.file} --source-url ${tarball} \
            --source-sha256 ${pin.sha256} --out "$out" ${secretArgs}
        '';
    in
    {
      lib = { inherit profiles mkImage; };

      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "hc1img";
          inherit version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          nativeBuildInputs = [ pkgs.pkg-config ];
          # The test suite needs the oracle tools and network-free fixtures: run it with
          # scripts/test in the dev shell instead.
          doCheck = false;
        };
      } // builtins.mapAttrs (name: _: mkImage pkgs { profile = name; }) profiles);

      apps = forAll (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.system}.default}/bin/hc1img";
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.default ];
          packages = with pkgs; [
            e2fsprogs dosfstools mtools ubootTools gptfdisk util-linux qemu bmap-tools
            libarchive zstd xz
          ];
        };
      });
    };
}
