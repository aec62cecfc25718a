#!/usr/bin/env python3
"""The SBOM of one image (SPDX 2.3, JSON) for e2e/images.sh.

Lists what the image holds: the binary's crate and every crate compiled into it (the normal,
non-build, non-dev dependency closure of its package in Cargo.lock, as `cargo metadata`
resolves it for x86_64 Linux), each with its version, declared licence and purl; and the
Debian package of each shared library copied beside it (`dpkg -S`), with its version.
"""

import argparse
import json
import subprocess
import sys
import uuid


def cargo_packages(package):
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked",
             "--filter-platform", "x86_64-unknown-linux-gnu"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    by_id = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == package and p["source"] is None)
    seen, todo = {root}, [root]
    while todo:
        for dep in nodes[todo.pop()]["deps"]:
            normal = any(k["kind"] is None for k in dep["dep_kinds"])
            if normal and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return root, [by_id[i] for i in sorted(seen, key=lambda i: (by_id[i]["name"], by_id[i]["version"]))]


def deb_packages(libs):
    out = {}
    for lib in libs:
        real = subprocess.run(["readlink", "-f", lib], capture_output=True, text=True).stdout.strip()
        owner = None
        for path in (lib, real, lib.replace("/lib/", "/usr/lib/", 1), real.replace("/lib/", "/usr/lib/", 1)):
            r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0].strip()
                break
        if owner is None:
            sys.exit(f"sbom.py: no Debian package owns {lib}")
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", owner],
                                 check=True, capture_output=True, text=True).stdout
        out.setdefault(owner, {"version": version, "files": []})["files"].append(lib)
    return out


def spdx_id(text):
    return "SPDXRef-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--package", required=True)
    a.add_argument("--version", required=True)
    a.add_argument("--commit", required=True)
    a.add_argument("--created", required=True)
    a.add_argument("--libs", required=True, help="file listing the copied libraries, one per line")
    args = a.parse_args()
    libs = [l.strip() for l in open(args.libs) if l.strip()]
    root, crates = cargo_packages(args.package)
    image_id = spdx_id(f"image-{args.package}")
    packages = [{
        "SPDXID": image_id,
        "name": args.package,
        "versionInfo": f"{args.version}-{args.commit}",
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
    }]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": image_id}]
    for p in crates:
        pid = spdx_id(f"crate-{p['name']}-{p['version']}")
        from_registry = (p.get("source") or "").startswith("registry+")
        packages.append({
            "SPDXID": pid,
            "name": p["name"],
            "versionInfo": p["version"],
            "downloadLocation": (f"https://crates.io/api/v1/crates/{p['name']}/{p['version']}/download"
                                 if from_registry else "NOASSERTION"),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": p.get("license") or "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:cargo/{p['name']}@{p['version']}"}],
        })
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": pid})
    for name, d in sorted(deb_packages(libs).items()):
        pid = spdx_id(f"deb-{name}-{d['version']}")
        packages.append({
            "SPDXID": pid,
            "name": name,
            "versionInfo": d["version"],
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": "files in the image: " + ", ".join(d["files"]),
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:deb/debian/{name}@{d['version']}?arch=amd64&distro=bookworm"}],
        })
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": pid})
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{args.package}-{args.version}-{args.commit}",
        "documentNamespace": f"https://xin.dev/spdx/{args.package}-{args.version}-{args.commit}-{uuid.uuid5(uuid.NAMESPACE_URL, args.package + args.commit)}",
        "creationInfo": {"created": args.created, "creators": ["Tool: xin e2e/sbom.py"]},
        "packages": packages,
        "relationships": relationships,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
