{
  description = "hc1img: ready-to-boot disk images for Odroid HC1 nodes running Arch Linux ARM";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0"; # keep equal to Cargo.toml's package.version
    in
    {
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
      });

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
