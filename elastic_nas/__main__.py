from elastic_nas.cli import main

raise SystemExit(main())
