from h3pipe.cli import main

raise SystemExit(main())
