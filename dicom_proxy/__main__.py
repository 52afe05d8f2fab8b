from dicom_proxy.cli import main

raise SystemExit(main())
